"""The ``config`` resource: the settings in force as typed fields, generated from the one table of settings.

``config_resource_class(Settings)`` makes one field per row of ``settings_table`` (all but podrun's
credentials): ``int``, ``float``, ``bool`` or ``str`` (a path is its text), ``None`` where the
default is computed or unset, each described with its variable, default and README's text. An
instance carries the effective values (``from_settings``), never ``EnvVar``s: the UI's resource
page showed an ``EnvVar`` field as "" / Default, not the value in force; with the values it shows
each one beside its variable and default, and the same settings give podrun's runs the code
location's job snapshot.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Optional

from dagster import ConfigurableResource
from pydantic import Field

from podinsight_dagster.settings import Setting, Settings, settings_table


class SettingsResource(ConfigurableResource):
    """The base of a generated ``config`` resource: turns its fields into ``Settings`` and back."""

    settings_class: ClassVar[type[Settings]] = Settings

    @classmethod
    def table(cls) -> tuple[Setting, ...]:
        return tuple(var for var in settings_table(cls.settings_class) if not var.secret)

    def settings(self) -> Settings:
        return self.settings_class.from_values({var.field: getattr(self, var.field) for var in self.table()})

    @classmethod
    def from_settings(cls, settings: Settings) -> "SettingsResource":
        """The effective values of ``settings`` (what the code location and podrun's runs both use)."""
        return cls(**{var.field: _value(getattr(settings, var.field)) for var in cls.table()})


def _value(value: Any) -> Any:
    return str(value) if isinstance(value, Path) else value


def _computed(var: Setting) -> bool:
    """A default that is not a constant: None stands for it in the resource (the data root's, the home's)."""
    return var.optional or var.type is Path


def config_field(var: Setting) -> tuple[Any, Any]:
    """The annotation and pydantic ``Field`` of ``var`` in the ``config`` resource."""
    kind = str if var.type is Path else var.type
    description = f"{var.name} (default {var.shown.strip('`')}): {var.help}"
    if _computed(var):
        return Optional[kind], Field(default=None, description=description)
    return kind, Field(default=var.default, description=description)


def config_resource_class(settings_class: type[Settings] = Settings, name: str = "PodInsightConfig",
                          module: str = __name__) -> type[SettingsResource]:
    """A ``ConfigurableResource`` class with one typed field per (non-secret) row of ``settings_class``."""
    table = tuple(var for var in settings_table(settings_class) if not var.secret)
    annotations: dict[str, Any] = {}
    namespace: dict[str, Any] = {"__module__": module, "__qualname__": name, "__annotations__": annotations,
                                 "__doc__": "The settings in force, one typed field per variable (credentials aside)."}
    for var in table:
        annotations[var.field], namespace[var.field] = config_field(var)
    namespace["settings_class"] = settings_class
    return type(name, (SettingsResource,), namespace)


PodInsightConfig = config_resource_class()
