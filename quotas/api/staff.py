"""The staff API: tiers, user quotas, API keys and usage reports."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any, TypeVar

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import Model, ProtectedError
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.authentication import BaseAuthentication, SessionAuthentication
from rest_framework.decorators import action
from rest_framework.permissions import (
    BasePermission,
    IsAdminUser,
    OperandHolder,
    SingleOperandHolder,
)
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import BaseThrottle
from rest_framework.validators import UniqueValidator

from ..authentication import APIKeyAuthentication
from ..ledger import team_usage
from ..models import (
    LAST_DEFAULT_DELETE,
    LAST_DEFAULT_UNSET,
    LIMIT_FIELDS,
    AIModel,
    APIKey,
    Team,
    Tier,
    UserQuota,
)
from ..policy import key_over_owner, quota_for_user
from .errors import error_response, exception_handler

M = TypeVar("M", bound=Model)


class StaffAccess:
    """Staff only; the staff tools do not spend the staff member's own AI quota."""

    authentication_classes: Sequence[type[BaseAuthentication]] = [
        APIKeyAuthentication,
        SessionAuthentication,
    ]
    permission_classes: Sequence[type[BasePermission] | OperandHolder | SingleOperandHolder] = [
        IsAdminUser
    ]
    throttle_classes: Sequence[type[BaseThrottle]] = []

    def get_exception_handler(self) -> Any:
        return exception_handler


class StaffViewSet(StaffAccess, viewsets.GenericViewSet[M]):
    pass


class SlugField(serializers.SlugRelatedField[Any]):
    """A related row by its slug; a slug holding a NUL byte names none (no database error)."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, str) and "\x00" in data:
            self.fail("does_not_exist", slug_name=self.slug_field, value=data)
        return super().to_internal_value(data)


def _model_field(**kwargs: Any) -> SlugField:
    return SlugField(slug_field="name", queryset=AIModel.objects.all(), **kwargs)


class TierSerializer(serializers.ModelSerializer[Tier]):
    allowed_models = _model_field(many=True, required=False)
    default_model = _model_field(required=False, allow_null=True)
    fallback_model = _model_field(required=False, allow_null=True)

    class Meta:
        model = Tier
        fields = (
            "slug",
            "name",
            *LIMIT_FIELDS,
            "allowed_models",
            "default_model",
            "fallback_model",
            "degrade_at_percent",
            "is_default",
            "soft",
        )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if attrs.get("is_default") is False and self.instance and self.instance.is_last_default():
            raise serializers.ValidationError({"is_default": LAST_DEFAULT_UNSET})
        fields = [f for f in self.Meta.fields if f != "allowed_models"]
        merged = {f: getattr(self.instance, f) for f in fields if self.instance}
        merged.update(attrs)
        allowed = merged.pop("allowed_models", None)
        if allowed is None:
            allowed = list(self.instance.allowed_models.all()) if self.instance else []
        tier = Tier(**merged)
        try:
            tier.clean()
            tier.validate_models(list(allowed))
        except DjangoValidationError as exc:
            raise serializers.ValidationError(exc.message_dict) from exc
        return attrs


class TierViewSet(StaffViewSet[Tier], viewsets.ModelViewSet[Tier]):
    """Tiers: named sets of limits. Empty (null) limits are unlimited."""

    queryset = Tier.objects.prefetch_related("allowed_models").select_related(
        "default_model", "fallback_model"
    )
    serializer_class = TierSerializer
    lookup_field = "slug"

    def destroy(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        if self.get_object().is_last_default():
            return error_response(
                409, LAST_DEFAULT_DELETE, "invalid_request_error", "default_tier_required"
            )
        try:
            return super().destroy(request, *args, **kwargs)
        except ProtectedError:
            return error_response(
                409,
                "This tier is in use by user quotas; move them to another tier first.",
                "invalid_request_error",
                "tier_in_use",
            )


class UserQuotaSerializer(serializers.ModelSerializer[UserQuota]):
    user = serializers.PrimaryKeyRelatedField(
        queryset=get_user_model().objects.all(),
        validators=[
            UniqueValidator(UserQuota.objects.all(), "This user has a quota; change that one.")
        ],
    )
    username = serializers.CharField(source="user.get_username", read_only=True)
    tier = SlugField(
        slug_field="slug", queryset=Tier.objects.all(), required=False, allow_null=True
    )
    team = SlugField(
        slug_field="slug", queryset=Team.objects.all(), required=False, allow_null=True
    )
    effective = serializers.SerializerMethodField(help_text="The limits that apply, overrides in.")

    class Meta:
        model = UserQuota
        fields = (
            "user",
            "username",
            "tier",
            "team",
            "blocked",
            *LIMIT_FIELDS,
            "note",
            "effective",
        )

    def validate_user(self, user: Any) -> Any:
        if self.instance is not None and user != self.instance.user:
            raise serializers.ValidationError("A quota cannot move to another user.")
        return user

    @extend_schema_field(OpenApiTypes.OBJECT)
    def get_effective(self, obj: UserQuota) -> dict[str, Any]:
        quota = quota_for_user(obj.user)
        values = {name: getattr(quota, name) for name in LIMIT_FIELDS}
        for name, value in values.items():
            if isinstance(value, Decimal):  # spend limits, in USD as the API writes them
                values[name] = str(value)
        return {"tier": quota.tier_slug or None, **values}


class UserQuotaViewSet(StaffViewSet[UserQuota], viewsets.ModelViewSet[UserQuota]):
    """Users' quotas: tier, per-field overrides (null: the tier's value) and blocks."""

    queryset = UserQuota.objects.select_related("user", "tier").order_by("user_id")
    serializer_class = UserQuotaSerializer
    lookup_field = "user"
    lookup_url_kwarg = "user_id"

    def get_queryset(self) -> Any:
        rows = super().get_queryset()
        params = self.request.query_params
        if params.get("tier"):
            rows = rows.filter(tier__slug=params["tier"])
        if params.get("blocked") in ("true", "false"):
            rows = rows.filter(blocked=params["blocked"] == "true")
        return rows


class TeamSerializer(serializers.ModelSerializer[Team]):
    tier = SlugField(
        slug_field="slug", queryset=Tier.objects.all(), required=False, allow_null=True
    )
    members = serializers.SerializerMethodField(help_text="Usernames of the team's members.")
    usage = serializers.SerializerMethodField(help_text="The team's usage today and this month.")

    class Meta:
        model = Team
        fields = ("slug", "name", "tier", "blocked", *LIMIT_FIELDS, "note", "members", "usage")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if attrs.get("requests_per_minute") == 0:
            raise serializers.ValidationError(
                {"requests_per_minute": "Must be at least 1, or null to use the tier's."}
            )
        return attrs

    def get_members(self, team: Team) -> list[str]:
        return [q.user.get_username() for q in team.members.all()]

    @extend_schema_field(OpenApiTypes.OBJECT)
    def get_usage(self, team: Team) -> dict[str, Any]:
        return team_usage(team.pk)


class TeamViewSet(StaffViewSet[Team], viewsets.ModelViewSet[Team]):
    """Teams: users sharing one budget. A member's call passes their limits and the team's."""

    queryset = Team.objects.select_related("tier").prefetch_related("members__user")
    serializer_class = TeamSerializer
    lookup_field = "slug"


class APIKeySerializer(serializers.ModelSerializer[APIKey]):
    user = serializers.PrimaryKeyRelatedField(queryset=get_user_model().objects.all())
    name = serializers.CharField(max_length=50, help_text="A free-form name for the key.")
    username = serializers.CharField(source="user.get_username", read_only=True)
    has_expired = serializers.BooleanField(read_only=True)
    tier = SlugField(
        slug_field="slug",
        queryset=Tier.objects.all(),
        required=False,
        allow_null=True,
        help_text="Limits of the key's own (none above its owner's); null: only the overrides.",
    )

    class Meta:
        model = APIKey
        fields: tuple[str, ...] = (
            "prefix",
            "name",
            "user",
            "username",
            "created",
            "expiry_date",
            "last_used_at",
            "revoked",
            "has_expired",
            "tier",
            *LIMIT_FIELDS,
        )
        read_only_fields = ("prefix", "created", "last_used_at", "revoked")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        names = ("user", "tier", *LIMIT_FIELDS)
        merged = {f: getattr(self.instance, f) for f in names} if self.instance else {}
        merged.update({k: v for k, v in attrs.items() if k in names})
        errors = key_over_owner(APIKey(**merged)) if merged.get("user") else {}
        if errors:
            raise serializers.ValidationError(errors)
        return attrs


class IssuedKeySerializer(APIKeySerializer):
    key = serializers.CharField(read_only=True, help_text="The key itself, shown only this once.")

    class Meta(APIKeySerializer.Meta):
        fields = (*APIKeySerializer.Meta.fields, "key")


class APIKeyViewSet(
    StaffViewSet[APIKey],
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.DestroyModelMixin,
):
    """Users' API keys, by prefix. Only a hash is stored: a key is shown once, when issued."""

    queryset = APIKey.objects.select_related("user").order_by("-created")
    serializer_class = APIKeySerializer
    lookup_field = "prefix"

    def get_queryset(self) -> Any:
        rows = super().get_queryset()
        params = self.request.query_params
        if params.get("user", "").isdigit():
            rows = rows.filter(user_id=int(params["user"]))
        if params.get("revoked") in ("true", "false"):
            rows = rows.filter(revoked=params["revoked"] == "true")
        return rows

    @extend_schema(responses={201: IssuedKeySerializer})
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        api_key: Any  # an APIKey, carrying its clear key to this one response
        api_key, key = APIKey.objects.create_key(**serializer.validated_data)
        api_key.key = key
        return Response(IssuedKeySerializer(api_key).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={200: APIKeySerializer})
    @action(detail=True, methods=["post"])
    def revoke(self, request: Request, prefix: str) -> Response:
        """Revoke a key: its callers are refused from now on. This cannot be undone."""
        api_key = self.get_object()
        APIKey.objects.filter(pk=api_key.pk).update(revoked=True)
        api_key.refresh_from_db()
        return Response(self.get_serializer(api_key).data)

    @extend_schema(responses={204: OpenApiResponse(description="Revoked (the key is kept).")})
    def destroy(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """Revoke a key; it stays listed, revoked, for the record."""
        api_key = self.get_object()
        APIKey.objects.filter(pk=api_key.pk).update(revoked=True)
        return Response(status=status.HTTP_204_NO_CONTENT)
