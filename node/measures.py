"""The measures catalog of joint rewards and punishments (联合奖惩措施清单).

For each business scene (a land auction, a public tender, a fiscal grant, a grain
purchase, a civil-service intake, a bank loan, customs clearance, an honours
selection, a licence) and each list or grade that triggers something there (the
serious dishonesty list, dishonest judgment debtors, the abnormal operation list,
customs grades, tax grades, the red list…), the catalog says which measure applies
— prohibit, restrict, heightened supervision or facilitate — what it means, its
legal basis and whether it binds the department. A default catalog ships with the
node (``node/data/measures.yaml``); a city overrides it with its own file
(``measures_path`` in the node's configuration); nothing falls back to the default
once a city file is set.

Invariants kept here:

* A measures catalog is refused whole when anything in it is off: an unknown key,
  a scene without measures, a trigger without themes, a measure naming an unknown
  trigger, the same trigger twice in one scene, an empty legal basis. The error
  names the file, the entry (``scenes[0](land_auction).measures[2]``) and what is
  wrong (:class:`~creditexchange.errors.ScreeningError`).
* :meth:`MeasuresCatalog.check_against` refuses a catalog whose triggers name a
  theme, a field or a code the data catalog does not hold, or whose scenes use a
  purpose the memorandum does not list: a trigger that can never fire is a mistake
  to report, not a measure to skip in silence. This module sits beside the data
  catalog, so it sees the catalog only through :class:`ThemeSource`.
* Every punishing measure carries its legal basis (国办发〔2020〕49号: every
  measure maps to a listed measure with a legal basis); the catalog cannot hold one
  without.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Mapping
from enum import StrEnum
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Protocol

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from creditexchange.errors import ScreeningError, describe_validation_error

__all__ = [
    "Condition",
    "MeasureKind",
    "MeasuresCatalog",
    "Scene",
    "SceneMeasure",
    "ThemeSource",
    "Trigger",
    "load_measures",
    "parse_measures",
]


class MeasureKind(StrEnum):
    """What a measure does to the subject in the scene, from the hardest to the kindest."""

    PROHIBIT = "prohibit"  # kept out: may not bid, apply, be hired, be commended
    RESTRICT = "restrict"  # allowed with limits: reduced score, a lower ceiling, no fast track
    HEIGHTENED_SUPERVISION = "heightened_supervision"  # closer checks, more inspections
    FACILITATE = "facilitate"  # green channel, fewer checks, priority (守信激励)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


_CODE = r"^[a-z][a-z0-9_]*$"


class Condition(_Strict):
    """A trigger that fires only on records whose ``field`` holds one of ``values``
    (codes, compared exactly): a customs grade of 严重失信企业, a tax grade of D."""

    field: str = Field(pattern=_CODE)
    values: list[str] = Field(min_length=1)


class Trigger(_Strict):
    """A list or a grade: a record of one of ``themes`` (meeting ``condition``) puts the
    subject on it."""

    code: str = Field(pattern=_CODE)
    name_zh: str = Field(min_length=1)
    name_en: str = Field(min_length=1)
    themes: list[str] = Field(min_length=1)
    condition: Condition | None = None
    latest_per: list[str] | None = None
    """For a theme that holds a state (a grade, a light): only the subject's latest record
    at a member (by decision date) counts, one per value of these fields (``[]``: one in
    all), so a grade since replaced triggers nothing."""
    description: str = ""

    def fires_on(self, theme: str, fields: Mapping[str, str]) -> bool:
        """Whether a record of ``theme`` with these field values (as codes) triggers."""
        if theme not in self.themes:
            return False
        if self.condition is None:
            return True
        return fields.get(self.condition.field) in self.condition.values


class SceneMeasure(_Strict):
    """What applies in a scene to a subject the trigger names."""

    trigger: str = Field(pattern=_CODE)
    kind: MeasureKind
    description_zh: str = Field(min_length=1)
    description_en: str = Field(min_length=1)
    legal_basis: str = Field(min_length=1)
    binding: bool


class Scene(_Strict):
    """A business scene, asked about under one memorandum purpose (whose subject types
    are the scene's: the memorandum decides who may be screened for what)."""

    code: str = Field(pattern=_CODE)
    name_zh: str = Field(min_length=1)
    name_en: str = Field(min_length=1)
    purpose: str = Field(pattern=_CODE)
    description: str = ""
    measures: list[SceneMeasure] = Field(min_length=1)

    @cached_property
    def measure_by_trigger(self) -> Mapping[str, SceneMeasure]:
        return {m.trigger: m for m in self.measures}


class _Field(Protocol):
    @property
    def codes(self) -> Mapping[str, str] | None: ...


class _Theme(Protocol):
    @property
    def field_by_name(self) -> Mapping[str, _Field]: ...


class ThemeSource(Protocol):
    """What the measures catalog needs of the data catalog: its themes by code, their
    fields by name and a code field's codes (``node.catalog.Catalog`` is one)."""

    @property
    def theme_by_code(self) -> Mapping[str, _Theme]: ...


class MeasuresCatalog(_Strict):
    version: str = Field(min_length=1)
    title: str = Field(min_length=1)
    effective: dt.date
    triggers: list[Trigger] = Field(min_length=1)
    scenes: list[Scene] = Field(min_length=1)
    kind: Literal["credit-exchange/measures"] = "credit-exchange/measures"

    @model_validator(mode="after")
    def _references_resolve(self) -> MeasuresCatalog:
        for what, codes in (
            ("trigger", [t.code for t in self.triggers]),
            ("scene", [s.code for s in self.scenes]),
        ):
            seen: set[str] = set()
            for code in codes:
                if code in seen:
                    raise ValueError(f"{what} {code!r} is listed twice")
                seen.add(code)
        triggers = {t.code for t in self.triggers}
        for i, scene in enumerate(self.scenes):
            listed: set[str] = set()
            for j, measure in enumerate(scene.measures):
                where = f"scenes[{i}]({scene.code}).measures[{j}]"
                if measure.trigger not in triggers:
                    raise ValueError(
                        f"{where}.trigger: unknown trigger {measure.trigger!r}; the catalog "
                        f"defines {', '.join(sorted(triggers))}"
                    )
                if measure.trigger in listed:
                    raise ValueError(
                        f"{where}.trigger: {measure.trigger!r} has a measure in this scene "
                        "already; one trigger, one measure per scene"
                    )
                listed.add(measure.trigger)
        return self

    @cached_property
    def trigger_by_code(self) -> Mapping[str, Trigger]:
        return {t.code: t for t in self.triggers}

    @cached_property
    def scene_by_code(self) -> Mapping[str, Scene]:
        return {s.code: s for s in self.scenes}

    def scene(self, code: str) -> Scene:
        """The scene ``code``, or ScreeningError listing the scenes there are."""
        try:
            return self.scene_by_code[code]
        except KeyError:
            raise ScreeningError(
                f"unknown scene {code!r}: the measures catalog {self.version} has "
                f"{', '.join(self.scene_by_code)}"
            ) from None

    def triggers_of(self, scene: Scene) -> list[Trigger]:
        """The triggers with a measure in ``scene``, in the scene's order."""
        return [self.trigger_by_code[m.trigger] for m in scene.measures]

    def themes_of(self, scene: Scene) -> tuple[str, ...]:
        """Every data theme a trigger of ``scene`` reads, each once, in order."""
        return tuple(
            dict.fromkeys(t for trigger in self.triggers_of(scene) for t in trigger.themes)
        )

    def check_against(
        self, catalog: ThemeSource, purposes: Collection[str] | None = None, *, source: str = ""
    ) -> None:
        """ScreeningError naming the first trigger theme, condition field or code the data
        ``catalog`` does not hold, or the first scene purpose not among ``purposes``
        (the installed memorandum's; not checked when None)."""
        prefix = f"{source}: " if source else ""
        themes = catalog.theme_by_code
        for i, trigger in enumerate(self.triggers):
            where = f"{prefix}triggers[{i}]({trigger.code})"
            for theme in trigger.themes:
                if theme not in themes:
                    raise ScreeningError(
                        f"{where}.themes: the data catalog has no theme {theme!r}; name a "
                        "theme of the node's catalog ('credit-node catalog list')"
                    )
                for name in trigger.latest_per or ():
                    if name not in themes[theme].field_by_name:
                        raise ScreeningError(
                            f"{where}.latest_per: theme {theme!r} has no field {name!r}"
                        )
                condition = trigger.condition
                if condition is None:
                    continue
                spec = themes[theme].field_by_name.get(condition.field)
                if spec is None:
                    raise ScreeningError(
                        f"{where}.condition.field: theme {theme!r} has no field {condition.field!r}"
                    )
                codes = spec.codes
                unknown = [v for v in condition.values if codes is not None and v not in codes]
                if unknown:
                    raise ScreeningError(
                        f"{where}.condition.values: {', '.join(map(repr, unknown))} are not "
                        f"codes of {theme}.{condition.field} ({', '.join(codes or {})})"
                    )
        if purposes is None:
            return
        for i, scene in enumerate(self.scenes):
            if scene.purpose not in purposes:
                raise ScreeningError(
                    f"{prefix}scenes[{i}]({scene.code}).purpose: the memorandum lists no "
                    f"purpose {scene.purpose!r}; it lists {', '.join(purposes)}"
                )


def parse_measures(data: Any, source: str) -> MeasuresCatalog:
    """A measures catalog from its parsed YAML, or ScreeningError naming ``source``, the
    entry and every problem."""
    if not isinstance(data, dict):
        raise ScreeningError(f"{source}: a measures catalog is a mapping at the top level")
    try:
        return MeasuresCatalog.model_validate(data, strict=False)
    except ValidationError as exc:
        problems = describe_validation_error(exc, data)
        raise ScreeningError(f"{source}: the measures catalog is invalid: {problems}") from None


def load_measures(
    path: Path | None = None,
    *,
    catalog: ThemeSource | None = None,
    purposes: Collection[str] | None = None,
) -> MeasuresCatalog:
    """Load a city's measures file, or the default one shipped with the node; checked
    against the data ``catalog`` and the memorandum's ``purposes`` when given."""
    if path is None:
        text = (
            resources.files("creditexchange.node").joinpath("data/measures.yaml").read_text("utf-8")
        )
        source = "default measures catalog"
    else:
        try:
            text = path.read_text("utf-8")
        except OSError as exc:
            raise ScreeningError(
                f"cannot read measures file {path}: {exc.strerror}; check measures_path"
            ) from None
        except UnicodeDecodeError:
            raise ScreeningError(f"{path}: not UTF-8 text; save the file as UTF-8") from None
        source = str(path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ScreeningError(f"{source}: not valid YAML: {exc}") from None
    measures = parse_measures(data, source)
    if catalog is not None:
        measures.check_against(catalog, purposes, source=source)
    return measures
