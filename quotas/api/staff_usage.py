"""The staff usage report: ledger totals and rows, as JSON pages or a streamed CSV."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Mapping
from datetime import date, timedelta
from typing import Any

from django.http import HttpResponseBase, StreamingHttpResponse
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.pagination import PageNumberPagination
from rest_framework.renderers import BaseRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import APIView

from .. import ledger
from .staff import StaffAccess

GROUPS = ("day", "user", "model")
# Days a report covers when it names no date range (ending today).
DEFAULT_DAYS = 30
# Rows read from the database at a time while a CSV streams.
CSV_CHUNK = 2_000
COLUMNS = (
    "requests",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "total_tokens",
    "cost",
    "denied",
)


class UsagePagination(PageNumberPagination):
    page_size = 100
    page_size_query_param = "page_size"
    max_page_size = 1_000


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
        if last is None:
            last = max(timezone.localdate(), first) if first else timezone.localdate()
        if first is None:
            first = last - timedelta(days=DEFAULT_DAYS - 1)
        attrs.update(date_from=first, date_to=last)
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
    date_from = serializers.DateField()
    date_to = serializers.DateField()
    totals = UsageRow()
    count = serializers.IntegerField(help_text="Rows in the whole report.")
    next = serializers.URLField(allow_null=True, help_text="The next page.")
    previous = serializers.URLField(allow_null=True, help_text="The previous page.")
    rows = UsageRow(many=True, help_text="This page's rows.")


class Echo:
    """A file that hands back what is written to it (for csv.writer, one row at a time)."""

    def write(self, value: str) -> str:
        return value


def csv_lines(rows: Iterator[dict[str, Any]], columns: list[str]) -> Iterator[str]:
    writer = csv.writer(Echo())
    yield writer.writerow(columns)
    for row in rows:
        yield writer.writerow(row.get(c, "") for c in columns)


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
    def get(self, request: Request, *args: Any, **kwargs: Any) -> HttpResponseBase:
        query = UsageQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        params = query.validated_data
        filters = {
            "user_id": params.get("user"),
            "date_from": params["date_from"],
            "date_to": params["date_to"],
            "model": params.get("model"),
        }
        rows = ledger.ledger_query(group_by=params["group_by"], **filters)
        if request.accepted_renderer.format == "csv":
            return self.stream_csv(rows, params["group_by"], params["date_from"], params["date_to"])
        totals = ledger.ledger_filter(**filters).aggregate(**ledger.SUMS)
        paginator = UsagePagination()
        page = paginator.paginate_queryset(rows, request, view=self)
        assert page is not None
        data = UsageReport(
            {
                "date_from": params["date_from"],
                "date_to": params["date_to"],
                "totals": {name: totals[name] or 0 for name in COLUMNS},
                "count": paginator.page.paginator.count if paginator.page else 0,
                "next": paginator.get_next_link(),
                "previous": paginator.get_previous_link(),
                "rows": page,
            }
        ).data
        return Response(data)

    def stream_csv(
        self, rows: Any, groups: tuple[str, ...], first: date, last: date
    ) -> StreamingHttpResponse:
        """Every row of the report as CSV, read `CSV_CHUNK` rows at a time."""
        keys = {"day": ["day"], "user": ["user_id", "username"], "model": ["model"]}
        columns = [key for group in GROUPS if group in groups for key in keys[group]]
        response = StreamingHttpResponse(
            csv_lines(rows.iterator(chunk_size=CSV_CHUNK), [*columns, *COLUMNS]),
            content_type="text/csv; charset=utf-8",
        )
        name = f"usage-{first:%Y%m%d}-{last:%Y%m%d}.csv"
        response["Content-Disposition"] = f'attachment; filename="{name}"'
        return response
