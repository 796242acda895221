"""Tiers, per-user quotas, the model catalogue, API keys and the usage ledger."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from decimal import Decimal
from typing import Any, ClassVar, cast

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import IntegrityError, connections, models, router, transaction
from django.db.models import F
from rest_framework_api_key.models import AbstractAPIKey
from rest_framework_api_key.models import APIKeyManager as LibraryAPIKeyManager

from .limit_kinds import KINDS
from .policy_writes import APIKeyQuerySet, PolicyQuerySet

MONEY: dict[str, Any] = {"max_digits": 14, "decimal_places": 6}
NON_NEGATIVE = [MinValueValidator(0)]

# Numeric limits a tier sets and a user quota may override. Empty means unlimited. Each
# limit kind has its field (the request rate with its burst after it), then the
# per-request cap.
LIMIT_FIELDS = (
    *(
        name
        for kind in KINDS
        for name in (
            (kind.field, "burst") if kind.field == "requests_per_minute" else (kind.field,)
        )
    ),
    "max_tokens_per_request",
)


class Provider(models.Model):
    """An OpenAI-compatible provider (OpenAI, OpenRouter, Azure, a local vLLM...) that
    models may be routed to. Its API key stays in the environment, never here."""

    name = models.CharField(max_length=100, unique=True)
    base_url = models.URLField(
        max_length=300,
        help_text="The OpenAI-compatible API root, e.g. https://openrouter.ai/api/v1.",
    )
    api_key_env = models.CharField(
        "API key variable",
        max_length=100,
        blank=True,
        validators=[RegexValidator(r"^[A-Za-z_][A-Za-z0-9_]*$", "An environment variable name.")],
        help_text="The name of the environment variable holding the API key; empty: no key "
        "(a local endpoint).",
    )
    timeout = models.FloatField(
        null=True,
        blank=True,
        validators=[MinValueValidator(0.1)],
        help_text="Seconds the provider may take; empty: QUOTAS['UPSTREAM_TIMEOUT'].",
    )

    objects = PolicyQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class AIModel(models.Model):
    """A model the provider serves, its prices and the provider's own limits for it."""

    name = models.CharField(max_length=100, unique=True, help_text="The provider's model id.")
    provider = models.ForeignKey(
        Provider,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="models",
        help_text="Empty: the default provider (OPENAI_API_KEY / OPENAI_BASE_URL).",
    )
    input_price_per_million = models.DecimalField(
        **MONEY, default=Decimal(0), validators=NON_NEGATIVE, help_text="USD per 1M prompt tokens."
    )
    output_price_per_million = models.DecimalField(
        **MONEY,
        default=Decimal(0),
        validators=NON_NEGATIVE,
        help_text="USD per 1M completion tokens.",
    )
    cached_input_price_per_million = models.DecimalField(
        **MONEY,
        null=True,
        blank=True,
        validators=NON_NEGATIVE,
        help_text="USD per 1M prompt tokens served from the provider's cache; empty: the "
        "input price.",
    )
    upstream_requests_per_minute = models.PositiveIntegerField(
        null=True, blank=True, help_text="The provider's request limit; empty: none."
    )
    upstream_tokens_per_minute = models.PositiveIntegerField(
        null=True, blank=True, help_text="The provider's token limit; empty: none."
    )
    active = models.BooleanField(default=True)

    objects = PolicyQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        verbose_name = "AI model"

    def __str__(self) -> str:
        return self.name

    def cost_micros(
        self, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0
    ) -> int:
        """Price of a call in micro-USD, rounded up; `cached_tokens` (part of the prompt)
        at the cached input price."""
        cached = min(max(cached_tokens, 0), prompt_tokens)
        cached_price = self.cached_input_price_per_million
        if cached_price is None:
            cached_price = self.input_price_per_million
        exact = (
            (prompt_tokens - cached) * self.input_price_per_million
            + cached * cached_price
            + completion_tokens * self.output_price_per_million
        )
        return int(exact.to_integral_value(rounding="ROUND_CEILING"))


class LimitValues(models.Model):
    """The numeric limits (see `LIMIT_FIELDS`) that tiers set and quotas override."""

    requests_per_minute = models.PositiveIntegerField(null=True, blank=True)
    burst = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text="Requests that may come at once; empty: requests_per_minute.",
    )
    tokens_per_minute = models.PositiveBigIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text="Tokens (prompt and completion) per minute; up to one minute's worth at once.",
    )
    requests_per_day = models.PositiveIntegerField(null=True, blank=True)
    tokens_per_day = models.PositiveBigIntegerField(null=True, blank=True)
    spend_per_day = models.DecimalField(
        **MONEY, null=True, blank=True, validators=NON_NEGATIVE, help_text="USD."
    )
    tokens_per_month = models.PositiveBigIntegerField(null=True, blank=True)
    spend_per_month = models.DecimalField(
        **MONEY, null=True, blank=True, validators=NON_NEGATIVE, help_text="USD."
    )
    max_tokens_per_request = models.PositiveIntegerField(null=True, blank=True)
    max_concurrent_requests = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        abstract = True


class Tier(LimitValues):
    """A named set of limits. Empty fields are unlimited."""

    slug = models.SlugField(unique=True)
    name = models.CharField(max_length=100)
    allowed_models = models.ManyToManyField(
        AIModel, blank=True, related_name="tiers", help_text="Empty: every active model."
    )
    default_model = models.ForeignKey(
        AIModel, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    fallback_model = models.ForeignKey(
        AIModel,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Served instead when the caller runs low.",
    )
    degrade_at_percent = models.PositiveSmallIntegerField(
        null=True,
        blank=True,
        validators=[MaxValueValidator(100)],
        help_text="Switch to the fallback model when less than this percent remains.",
    )
    is_default = models.BooleanField(default=False, help_text="The tier of users without one.")
    soft = models.BooleanField(
        default=False,
        help_text="Shadow mode: count and alert, but never refuse (to roll out new limits).",
    )

    objects = PolicyQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def save(self, *args: Any, **kwargs: Any) -> None:
        with transaction.atomic():
            if self.is_default:
                Tier.objects.filter(is_default=True).exclude(pk=self.pk).update(is_default=False)
            super().save(*args, **kwargs)

    def is_last_default(self) -> bool:
        """Stored as the default tier, with no other: deleting it or taking its default
        away would leave users without a tier of their own refused."""
        if self.pk is None:
            return False
        defaults = set(Tier.objects.filter(is_default=True).values_list("pk", flat=True)[:2])
        return defaults == {self.pk}

    def clean(self) -> None:
        errors: dict[str, str] = {}
        if self.requests_per_minute == 0:
            errors["requests_per_minute"] = "Must be at least 1, or empty for unlimited."
        if self.burst is not None and self.burst < 1:
            errors["burst"] = "Burst must be at least 1."
        if errors:
            raise ValidationError(errors)

    def validate_models(self, allowed: list[AIModel] | None = None) -> None:
        """`default_model` and `fallback_model` must be among the allowed models."""
        if allowed is None:
            allowed = list(self.allowed_models.all()) if self.pk else []
        if not allowed:
            return
        errors = {}
        for field in ("default_model", "fallback_model"):
            model = getattr(self, field)
            if model is not None and model not in allowed:
                errors[field] = f"{model} is not one of this tier's allowed models."
        if errors:
            raise ValidationError(errors)


class Team(LimitValues):
    """Users sharing one budget: a member's call must pass their own limits and the team's.

    The team's limits are its tier's with its own overrides on top (empty: the tier's
    value; no tier and no override: the team level limits nothing).
    """

    name = models.CharField(max_length=100)
    slug = models.SlugField(unique=True)
    tier = models.ForeignKey(
        Tier,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="teams",
        help_text="The team's shared limits; empty: only the overrides below.",
    )
    blocked = models.BooleanField(default=False, help_text="Refuse every member's request.")
    note = models.CharField(max_length=200, blank=True)

    objects = PolicyQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        if self.requests_per_minute == 0:
            raise ValidationError(
                {"requests_per_minute": "Must be at least 1, or empty to use the tier's."}
            )


# Why the last default tier stays (the admin and the staff API answer with these).
LAST_DEFAULT_UNSET = (
    "This is the default tier: users without a tier of their own would be refused. "
    "Make another tier the default instead."
)
LAST_DEFAULT_DELETE = (
    "The default tier cannot be deleted: users without a tier of their own would be "
    "refused. Make another tier the default first."
)


class UserQuota(LimitValues):
    """A user's tier, per-field overrides of it, their team, or a block."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="quota"
    )
    tier = models.ForeignKey(
        Tier, null=True, blank=True, on_delete=models.PROTECT, help_text="Empty: the default tier."
    )
    team = models.ForeignKey(
        Team,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="members",
        help_text="A team whose shared limits this user's calls must pass too.",
    )
    blocked = models.BooleanField(default=False, help_text="Refuse every request of this user.")
    note = models.CharField(max_length=200, blank=True)

    objects = PolicyQuerySet.as_manager()

    class Meta:
        verbose_name = "user quota"

    def __str__(self) -> str:
        return f"Quota of {self.user}"

    def clean(self) -> None:
        if self.requests_per_minute == 0:
            raise ValidationError(
                {"requests_per_minute": "Must be at least 1, or empty to use the tier's."}
            )


class APIKeyManager(LibraryAPIKeyManager.from_queryset(APIKeyQuerySet)):  # type: ignore[misc]
    def get_usable_keys(self) -> models.QuerySet[Any]:
        keys: models.QuerySet[Any] = super().get_usable_keys()
        return keys.select_related("user")


class APIKey(AbstractAPIKey, LimitValues):
    """A user's API key: stored hashed, only its prefix in clear.

    A key may have limits of its own (a tier and overrides, none above its owner's): a
    call on it must pass the key's, the owner's and the owner's team's limits.
    """

    objects: ClassVar[APIKeyManager] = APIKeyManager()

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_keys"
    )
    tier = models.ForeignKey(
        Tier,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="api_keys",
        help_text="Limits of this key's own; empty: only the overrides below.",
    )
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta(AbstractAPIKey.Meta):
        verbose_name = "API key"
        verbose_name_plural = "API keys"

    def __str__(self) -> str:
        return str(self.name)

    def clean(self) -> None:
        super().clean()
        from .policy import key_over_owner

        if self.user_id is not None:
            errors = key_over_owner(self)
            if errors:
                raise ValidationError(errors)


class UsageRecord(models.Model):
    """The ledger: settled usage per user, day (in the quota time zone) and model."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="usage_records"
    )
    day = models.DateField(db_index=True)
    model = models.CharField(max_length=100, blank=True)
    requests = models.PositiveIntegerField(default=0)
    prompt_tokens = models.PositiveBigIntegerField(default=0)
    completion_tokens = models.PositiveBigIntegerField(default=0)
    cached_tokens = models.PositiveBigIntegerField(
        default=0, help_text="Prompt tokens served from the provider's cache (part of the prompt)."
    )
    reasoning_tokens = models.PositiveBigIntegerField(
        default=0, help_text="Completion tokens spent reasoning (part of the completion)."
    )
    cost = models.DecimalField(**MONEY, default=Decimal(0), help_text="USD.")
    denied = models.PositiveIntegerField(default=0, help_text="Requests refused by a limit.")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "day", "model"], name="quotas_usage_unique")
        ]
        ordering = ["-day", "user", "model"]
        verbose_name = "usage record"

    def __str__(self) -> str:
        return f"{self.user} {self.day} {self.model or '-'}"

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @classmethod
    def add(cls, user_id: int, day: Any, model: str, **amounts: Any) -> None:
        """Add amounts to a ledger row, creating it if needed (safe under concurrency).

        On PostgreSQL and SQLite this is one `INSERT ... ON CONFLICT DO UPDATE`, committed
        like any write; elsewhere an UPDATE, then an INSERT if no row was there.
        """
        try:
            _add_to_ledger(cls, {"user_id": user_id, "day": day, "model": model}, amounts)
        except IntegrityError:
            if get_user_model().objects.filter(pk=user_id).exists():
                raise
            # The user was deleted meanwhile, and their ledger rows with them.


class LevelUsage(models.Model):
    """The ledger of a team or a key with limits: settled usage per day and model.

    `level` is the subject whose counters it backs: "t:<team id>" or "k:<key id>". Rows
    are written with the member's own `UsageRecord`, and survive the team or key.
    """

    level = models.CharField(max_length=160)
    day = models.DateField(db_index=True)
    model = models.CharField(max_length=100, blank=True)
    requests = models.PositiveIntegerField(default=0)
    prompt_tokens = models.PositiveBigIntegerField(default=0)
    completion_tokens = models.PositiveBigIntegerField(default=0)
    cached_tokens = models.PositiveBigIntegerField(default=0)
    reasoning_tokens = models.PositiveBigIntegerField(default=0)
    cost = models.DecimalField(**MONEY, default=Decimal(0), help_text="USD.")
    denied = models.PositiveIntegerField(default=0, help_text="Requests refused by a limit.")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["level", "day", "model"], name="quotas_level_usage_unique"
            )
        ]
        ordering = ["-day", "level", "model"]
        verbose_name = "team or key usage"
        verbose_name_plural = "team and key usage"

    def __str__(self) -> str:
        return f"{self.level} {self.day} {self.model or '-'}"

    @classmethod
    def add(cls, level: str, day: Any, model: str, **amounts: Any) -> None:
        """As `UsageRecord.add`, for one level's row."""
        _add_to_ledger(cls, {"level": level, "day": day, "model": model}, amounts)


# A total of many ledger rows: wider than one row's cost.
TOTAL_MONEY: dict[str, Any] = {"max_digits": 20, "decimal_places": 6}


class LedgerTotal(models.Model):
    """The sums of some ledger rows (`UsageRecord`), and how many rows they are.

    The database keeps the totals: triggers on the ledger (migration 0008, PostgreSQL and
    SQLite) add every insert, update and delete of a ledger row to them in the same
    statement, whatever made it (a settlement, the ORM, a bulk insert, a deleted user's
    cascade). A total whose rows are all gone is deleted with the last of them.
    """

    records = models.BigIntegerField(default=0, help_text="Ledger rows summed.")
    requests = models.BigIntegerField(default=0)
    prompt_tokens = models.BigIntegerField(default=0)
    completion_tokens = models.BigIntegerField(default=0)
    cached_tokens = models.BigIntegerField(default=0)
    reasoning_tokens = models.BigIntegerField(default=0)
    cost = models.DecimalField(**TOTAL_MONEY, default=Decimal(0), help_text="USD.")
    denied = models.BigIntegerField(default=0)

    class Meta:
        abstract = True


class LedgerDayTotal(LedgerTotal):
    """The ledger of every user summed per day and model."""

    day = models.DateField()
    model = models.CharField(max_length=100, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["day", "model"], name="quotas_ledger_day_total_unique")
        ]
        ordering = ["-day", "model"]
        verbose_name = "ledger total of a day"

    def __str__(self) -> str:
        return f"{self.day} {self.model or '-'}"


class LedgerMonthTotal(LedgerTotal):
    """A user's ledger summed per month (`month`: its first day)."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    month = models.DateField()

    class Meta:
        constraints = [  # the month first: a month's totals are read together
            models.UniqueConstraint(
                fields=["month", "user"], name="quotas_ledger_month_total_unique"
            )
        ]
        ordering = ["-month", "user"]
        verbose_name = "ledger total of a user's month"

    def __str__(self) -> str:
        return f"{self.user_id} {self.month:%Y-%m}"


def _add_to_ledger(table: type[models.Model], key: dict[str, Any], amounts: dict[str, Any]) -> None:
    """Add amounts to the row of `table` at `key` (its unique fields), creating it if
    needed, in one statement where the database can; raises IntegrityError for a key
    that cannot be inserted (a foreign key gone)."""
    connection = connections[router.db_for_write(table)]
    manager: Any = table._default_manager
    if connection.vendor not in _UPSERT_VENDORS:
        updates = {name: F(name) + value for name, value in amounts.items()}
        rows = manager.filter(**key)
        if rows.update(**updates):
            return
        try:
            with transaction.atomic():
                manager.create(**key, **amounts)
        except IntegrityError:  # created by a concurrent request in between
            if not rows.update(**updates):
                raise
        return
    added = tuple(name for name in LEDGER_AMOUNTS if name in amounts)
    if len(added) != len(amounts):
        unknown = sorted(set(amounts) - set(added))
        raise TypeError(f"{table.__name__} has no amount {unknown}.")
    sql = _upsert_sql(connection, table, tuple(key), added)
    adapt = connection.ops.adapt_decimalfield_value
    given = {name: amounts.get(name, 0) for name in LEDGER_AMOUNTS}
    given["cost"] = Decimal(given["cost"])
    # A new row starts from the amounts, none below 0 (a correction that finds no row has
    # nothing to correct); an existing row is moved by them.
    start = [max(given[name], 0) for name in LEDGER_AMOUNTS]
    moves = [given[name] for name in added]
    for values in (start, moves):
        values[:] = [adapt(v, **MONEY) if isinstance(v, Decimal) else v for v in values]
    keys = [
        connection.ops.adapt_datefield_value(value) if name == "day" else value
        for name, value in key.items()
    ]
    # Inside a transaction a failed statement must not abort it: a savepoint.
    inside = transaction.atomic() if connection.in_atomic_block else nullcontext()
    with inside, connection.cursor() as cursor:
        cursor.execute(sql, [*keys, *start, *moves])


# Databases whose `INSERT ... ON CONFLICT (...) DO UPDATE` adds to a ledger row in one step.
_UPSERT_VENDORS = frozenset({"postgresql", "sqlite"})
# The ledger's amount columns (summed into its totals too).
LEDGER_AMOUNTS = (
    "requests",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "cost",
    "denied",
)


_upserts: dict[tuple[str, str, tuple[str, ...]], str] = {}


def _upsert_sql(
    connection: Any, table: type[models.Model], key: tuple[str, ...], added: tuple[str, ...]
) -> str:
    """The statement creating a ledger row or adding the `added` amounts to it.

    It takes the row's key and every amount for a new row, then the `added` amounts.
    """
    sql = _upserts.get((connection.vendor, table.__name__, added))
    if sql is None:
        quote = connection.ops.quote_name
        meta = table._meta
        # Every name here is a concrete field, never a reverse relation.
        field = cast("Callable[[str], models.Field[Any, Any]]", meta.get_field)
        name = quote(meta.db_table)
        keys = [quote(field(k.removesuffix("_id")).column) for k in key]
        columns = [quote(field(c).column) for c in LEDGER_AMOUNTS]
        sets = [f"{quote(field(c).column)}" for c in added]
        action = "UPDATE SET " + ", ".join(f"{c} = {name}.{c} + %s" for c in sets)
        sql = _upserts[connection.vendor, table.__name__, added] = (
            f"INSERT INTO {name} ({', '.join(keys + columns)}) "
            f"VALUES ({', '.join(['%s'] * (len(keys) + len(columns)))}) "
            f"ON CONFLICT ({', '.join(keys)}) DO {action if added else 'NOTHING'}"
        )
    return sql


class QuotaAdjustment(models.Model):
    """A staff action on a user's counters for one day, kept in the ledger."""

    RESET = "reset"
    BOOST = "boost"
    KINDS = [(RESET, "Reset today's counters"), (BOOST, "Temporary boost")]

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="quota_adjustments"
    )
    day = models.DateField(db_index=True)
    kind = models.CharField(max_length=10, choices=KINDS)
    requests = models.IntegerField(default=0, help_text="Requests given back or added.")
    tokens = models.BigIntegerField(default=0, help_text="Tokens given back or added.")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    reason = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} for {self.user} on {self.day}"


# Limits an alert rule may watch: those spent from a day or month window.
ALERT_LIMITS = [(kind.field, kind.label) for kind in KINDS if kind.is_budget]


class AlertRule(models.Model):
    """Alert when a limit of a tier's users (or of a team) passes `percent` of it.

    A tier or team without rules of its own alerts at `QUOTAS["ALERT_THRESHOLDS"]`.
    """

    tier = models.ForeignKey(
        Tier, null=True, blank=True, on_delete=models.CASCADE, related_name="alert_rules"
    )
    team = models.ForeignKey(
        Team, null=True, blank=True, on_delete=models.CASCADE, related_name="alert_rules"
    )
    limit = models.CharField(
        max_length=40, blank=True, choices=ALERT_LIMITS, help_text="Empty: every limit."
    )
    percent = models.PositiveSmallIntegerField(
        validators=[MinValueValidator(1), MaxValueValidator(1000)],
        help_text="Of the limit; 100 alerts when it is reached.",
    )

    objects = PolicyQuerySet.as_manager()

    class Meta:
        ordering = ["tier__name", "team__name", "limit", "percent"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(tier__isnull=True, team__isnull=False)
                | models.Q(tier__isnull=False, team__isnull=True),
                name="quotas_alert_rule_tier_or_team",
                violation_error_message="A rule is for a tier or for a team.",
            ),
            models.UniqueConstraint(
                fields=["tier", "team", "limit", "percent"],
                name="quotas_alert_rule_unique",
                nulls_distinct=False,
            ),
        ]

    def __str__(self) -> str:
        owner = self.tier or self.team
        return f"{owner}: {self.limit or 'every limit'} at {self.percent}%"


class Alert(models.Model):
    """A threshold crossed by a user (or a team) on one limit in one window: at most once."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="quota_alerts",
    )
    team = models.ForeignKey(
        Team, null=True, blank=True, on_delete=models.CASCADE, related_name="alerts"
    )
    subject = models.CharField(max_length=100, help_text="The counters' subject (u:42, t:5).")
    limit = models.CharField(max_length=40)
    percent = models.PositiveSmallIntegerField()
    window = models.CharField(max_length=8, help_text="The day (20261128) or month (202611).")
    used = models.DecimalField(**MONEY)
    limit_value = models.DecimalField(**MONEY)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["subject", "limit", "percent", "window"], name="quotas_alert_once"
            )
        ]

    def __str__(self) -> str:
        return f"{self.subject} {self.limit} at {self.percent}% ({self.window})"


class AlertDelivery(models.Model):
    """The outbox: one alert to send by one channel, tried until it goes or gives up."""

    EMAIL = "email"
    WEBHOOK = "webhook"
    CHANNELS = [(EMAIL, "Email"), (WEBHOOK, "Webhook")]
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"
    STATES = [(PENDING, "Pending"), (SENT, "Sent"), (FAILED, "Failed")]

    alert = models.ForeignKey(Alert, on_delete=models.CASCADE, related_name="deliveries")
    channel = models.CharField(max_length=10, choices=CHANNELS)
    target = models.CharField(max_length=500, help_text="The addresses or the URL.")
    state = models.CharField(max_length=10, choices=STATES, default=PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField()
    sent_at = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["next_attempt_at"]
        verbose_name_plural = "alert deliveries"
        indexes = [models.Index(fields=["state", "next_attempt_at"])]

    def __str__(self) -> str:
        return f"{self.get_channel_display()} to {self.target}: {self.get_state_display()}"
