"""``TrainConfig``: the settings of a `clipood train` run, one field per flag. The fields of the core's settings
come from the settings table (default, help, choices, resume behaviour); the command's own fields are below."""
import dataclasses
from dataclasses import field

from .errors import DataError
from .settings import FREE, SETTINGS, TRAJECTORY, check_rules, check_settings


def _own(default, help, resume, kind=str):
    """A field of the command's own (no core setting): its default, help and resume behaviour."""
    return kind, field(default=default, metadata={"help": help, "resume": resume})


# where the run's data and files are (first in --help), then the table's settings, then how the command runs
_LEADING = {
    "data_dir": _own(None, "ROOT of ROOT/<domain>/<class>/<image>", TRAJECTORY),
    "test_domains": _own(None, "domain folder name(s) held out for testing", TRAJECTORY, list),
    "output_dir": _own("./clipood_output", "results.json, results.png, model.pt, checkpoint.pt", FREE),
}
_TRAILING = {
    "wise_ft": _own(None, "ALPHAS, e.g. 0,0.25,0.5,0.75,1: at the end also evaluate WiSE-FT (1 - alpha) x the "
                          "starting weights + alpha x the model's, and pick the alpha best on the holdout", FREE),
    "resume": _own(False, "continue from OUTPUT_DIR/checkpoint.pt", FREE, bool),
    "overwrite": _own(False, "start over in an OUTPUT_DIR that holds a finished or unfinished run, deleting its "
                             "results and checkpoint", FREE, bool),
    "allow_missing_classes": _own(False, "accept domains that lack some classes", TRAJECTORY, bool),
    "seed": _own(0, "seed of the data order, augmentation and holdout split", TRAJECTORY, int),
}


def _setting_field(setting):
    """(type, field) of a `clipood train` field from its table entry."""
    kind = setting.kind or (list if isinstance(setting.default, tuple) else type(setting.default))
    default = setting.default
    spec = (dict(default_factory=lambda: list(default)) if isinstance(default, (list, tuple))
            else dict(default=default))
    metadata = {"help": setting.help or setting.meaning, "resume": setting.resume, "setting": setting.name}
    if setting.choices:
        metadata["choices"] = setting.choices
    return kind, field(**spec, metadata=metadata)


_FIELDS = {**_LEADING, **{setting.flag: _setting_field(setting) for setting in SETTINGS.values() if setting.flag},
           **_TRAILING}


class _Checks:
    """What a TrainConfig checks and how it spells the core's settings."""

    def check(self):
        """Raise DataError naming the flag of the first setting out of its range or rule it breaks."""
        if not self.data_dir:
            raise DataError("give --data-dir")
        if not self.test_domains:
            raise DataError("give at least one --test-domains")
        core = self.core_values()
        check_settings(core, spelled=self.flag_of)
        if self.wise_ft is not None:
            check_settings({"wise_ft_alphas": alphas_of(self.wise_ft, "--wise-ft")}, spelled=lambda _: "--wise-ft")
        check_rules(core, spelled=self.flag_of, held_out=bool(self.holdout_fraction),
                    fixes={"swad_held_out": "give --holdout-fraction > 0 (e.g. 0.2)"})
        if self.resume and self.overwrite:
            raise DataError("--resume continues the run in --output-dir and --overwrite starts it over: give one")

    def core_values(self):
        """{core setting: value} of the fields that hold one."""
        return {self.CORE_NAMES.get(f, f): getattr(self, f) for f in self.__dataclass_fields__
                if self.CORE_NAMES.get(f, f) in SETTINGS}

    @classmethod
    def flag_of(cls, core_name):
        """The command-line flag of the field that holds the core setting ``core_name``."""
        fields = {core: f for f, core in cls.CORE_NAMES.items()}
        return flag(fields.get(core_name, core_name))


TrainConfig = dataclasses.make_dataclass(
    "TrainConfig", [(name, kind, spec) for name, (kind, spec) in _FIELDS.items()], bases=(_Checks,),
    namespace={
        "__doc__": "Defaults are the paper's domain-shift settings (PACS: lr 5e-6, 10 epochs x 500 iterations).",
        "__module__": __name__,
        # the core name of each field that has another one (the other fields have the core's names)
        "CORE_NAMES": {setting.flag: name for name, setting in SETTINGS.items()
                       if setting.flag and setting.flag != name},
        # fields that may change between an interrupted run and its resumption
        "RESUMABLE_CHANGES": tuple(name for name, (_, spec) in _FIELDS.items() if spec.metadata["resume"] == FREE),
    })


def alphas_of(listed, option):
    """The numbers of a comma-separated list such as WiSE-FT's alphas (check_settings checks their range)."""
    try:
        return [float(part) for part in listed.split(",")]
    except ValueError:
        raise DataError(f"{option} takes comma-separated numbers, e.g. 0,0.25,0.5,0.75,1; got {listed!r}") from None


def flag(name):
    """The command-line flag of a TrainConfig field."""
    return "--" + name.replace("_", "-")
