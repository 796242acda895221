"""The staff usage report: ledger totals and rows, as JSON or CSV."""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.renderers import BaseRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import APIView

from .. import ledger
from .staff import StaffAccess

GROUPS = ("day", "user", "model")


class CSVRenderer(BaseRenderer):
    """The report's rows as CSV (an error as one `error,message` row)."""

    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(
        self,
        data: Any,
        accepted_media_type: str | None = None,
        renderer_context: Mapping[str, Any] | None = None,
    ) -> bytes:
        out = io.StringIO()
        writer = csv.writer(out)
        if isinstance(data, dict) and "rows" in data:
            columns = list(data["rows"][0]) if data["rows"] else list(data["totals"])
            writer.writerow(columns)
            for row in data["rows"]:
                writer.writerow(row.get(c, "") for c in columns)
        else:
            error = (data or {}).get("error", {}) if isinstance(data, dict) else {}
            writer.writerow(["error", "message"])
            writer.writerow([error.get("code", ""), error.get("message", data)])
        return out.getvalue().encode(self.charset)


class UsageQuery(serializers.Serializer[dict[str, Any]]):
    user = serializers.IntegerField(required=False, min_value=1, help_text="A user id.")
    date_from = serializers.DateField(required=False, help_text="First day, inclusive.")
    date_to = serializers.DateField(required=False, help_text="Last day, inclusive.")
    model = serializers.CharField(required=False, help_text="A model name.")
    group_by = serializers.CharField(
        required=False, default="day", help_text="Comma-separated: day, user, model."
    )

    def validate_group_by(self, value: str) -> tuple[str, ...]:
        groups = tuple(g.strip() for g in value.split(",") if g.strip())
        unknown = sorted(set(groups) - set(GROUPS))
        if unknown or not groups:
            raise serializers.ValidationError(f"Group by any of {', '.join(GROUPS)}.")
        return groups

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        first, last = attrs.get("date_from"), attrs.get("date_to")
        if first and last and first > last:
            raise serializers.ValidationError({"date_from": "Must not be after date_to."})
        return attrs


class UsageRow(serializers.Serializer[dict[str, Any]]):
    day = serializers.DateField(required=False)
    user_id = serializers.IntegerField(required=False)
    username = serializers.CharField(required=False)
    model = serializers.CharField(required=False)
    requests = serializers.IntegerField()
    prompt_tokens = serializers.IntegerField()
    completion_tokens = serializers.IntegerField()
    cached_tokens = serializers.IntegerField(help_text="Of the prompt, served from cache.")
    reasoning_tokens = serializers.IntegerField(help_text="Of the completion, reasoning.")
    total_tokens = serializers.IntegerField()
    cost = serializers.DecimalField(max_digits=20, decimal_places=6, help_text="USD.")
    denied = serializers.IntegerField(help_text="Requests refused by a limit.")


class UsageReport(serializers.Serializer[dict[str, Any]]):
    totals = UsageRow()
    rows = UsageRow(many=True)


def _totals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    names = (
        "requests",
        "prompt_tokens",
        "completion_tokens",
        "cached_tokens",
        "reasoning_tokens",
        "total_tokens",
        "cost",
        "denied",
    )
    return {name: sum(row[name] for row in rows) for name in names}


class UsageView(StaffAccess, APIView):
    """Settled usage from the ledger, summed per day (and per user or model if asked)."""

    # api_settings imports the dotted paths: the stubs type the setting as strings.
    renderer_classes = [*api_settings.DEFAULT_RENDERER_CLASSES, CSVRenderer]  # type: ignore[list-item]

    @extend_schema(
        parameters=[UsageQuery],
        responses={
            200: UsageReport,
            (200, "text/csv"): OpenApiResponse(OpenApiTypes.STR, description="The rows as CSV."),
        },
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        query = UsageQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        params = query.validated_data
        rows = ledger.ledger_rows(
            user_id=params.get("user"),
            date_from=params.get("date_from"),
            date_to=params.get("date_to"),
            model=params.get("model"),
            group_by=params["group_by"],
        )
        data = UsageReport({"totals": _totals(rows), "rows": rows}).data
        headers = {}
        if request.accepted_renderer.format == "csv":
            headers["Content-Disposition"] = 'attachment; filename="usage.csv"'
        return Response(data, headers=headers)
