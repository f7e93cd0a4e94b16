"""Each plan field declared once (tui/plan_fields.py): the table cannot drift from the Plan,
the command line, the plan file's loader, validation or docs/options.md."""

import shlex
from dataclasses import fields

import pytest

from tests.infra import REPO, make_fake_target
from tui.cli import build_parser, plan_from_args
from tui.engine import Engine, Facts
from tui.plan import Plan, PlanError
from tui.plan_fields import BOOLEAN, FIELDS, STRING, STRINGS, markdown, plan_field
from tui.validation import FIELD_OPTIONS

BY_NAME = {f.name: f for f in FIELDS}
#: What the Plan's annotation is for each type a plan file's key holds.
ANNOTATIONS = {STRING: {"str", "str | None"}, STRINGS: {"list[str]"}, BOOLEAN: {"bool"}}
#: Fields whose example is only valid beside another field's value (ip= needs a network source).
BESIDE = {"network": {"source": "nfs:10.0.0.11:/srv/images,vers=3"}}


def test_every_plan_field_has_exactly_one_entry_in_the_same_order():
    assert [f.name for f in fields(Plan)] == [f.name for f in FIELDS]


def test_options_and_names_are_unique():
    assert len({f.option for f in FIELDS}) == len(FIELDS)
    assert len(BY_NAME) == len(FIELDS)


@pytest.mark.parametrize("declared", FIELDS, ids=lambda f: f.name)
def test_the_toml_type_is_the_plans_annotation(declared):
    annotation = next(f.type for f in fields(Plan) if f.name == declared.name)
    assert annotation in ANNOTATIONS[declared.toml]
    assert declared.accepts(declared.example)
    default = getattr(Plan(), declared.name)
    assert default is None or declared.accepts(default)


@pytest.mark.parametrize("command", ["plan", "apply"])
@pytest.mark.parametrize("declared", FIELDS, ids=lambda f: f.name)
def test_every_option_is_accepted_and_sets_its_field(command, declared):
    args = build_parser().parse_args([command, *declared.cli_words()])
    assert getattr(args, declared.name) == declared.example
    untouched = build_parser().parse_args([command])
    assert getattr(untouched, declared.name) is None  # not given: the plan (or file) decides


@pytest.mark.parametrize("declared", FIELDS, ids=lambda f: f.name)
def test_every_example_is_valid_through_the_clis_validation(tmp_path, declared):
    """The example, given on the command line beside a valid plan, draws no error for its field."""
    kernels = plan_field("kernels").example
    target = make_fake_target(tmp_path / "target", kvers=tuple(kernels))
    base = {"source": plan_field("source").example, "image": plan_field("image").example}
    base |= BESIDE.get(declared.name, {})
    words = [w for name, value in base.items() if name != declared.name for w in BY_NAME[name].cli_words(value)]
    args = build_parser().parse_args(["plan", f"--root={target}", *words, *declared.cli_words()])
    engine = Engine(target, dry_run=True, facts=Facts([], 8 << 30, 0, 900 << 20, watch=False))
    plan_from_args(args, engine)
    assert getattr(engine.plan, declared.name) == declared.example
    assert [p.line() for p in engine.problems(declared.name, probes=False) if p.severity == "error"] == []


@pytest.mark.parametrize("declared", FIELDS, ids=lambda f: f.name)
def test_a_plan_file_line_loads_to_the_example_and_a_wrong_type_names_the_field(declared):
    assert getattr(Plan.from_toml(declared.toml_line()), declared.name) == declared.example
    wrong = f"{declared.name} = 1\n"
    with pytest.raises(PlanError) as e:
        Plan.from_toml(wrong, origin="--plan 'p.toml'")
    message = str(e.value)
    assert message.startswith(f"--plan 'p.toml': '{declared.name}' must be {declared.toml} (e.g. ")
    assert declared.toml_line() in message and "\n" not in message


@pytest.mark.parametrize("declared", FIELDS, ids=lambda f: f.name)
def test_an_example_in_the_help_is_the_fields_example(declared):
    if "e.g." not in declared.help:
        return
    after = declared.help.split("e.g.", 1)[1]
    assert shlex.join(declared.cli_words()) in after or str(declared.example) in after


def test_problems_name_the_fields_option():
    for f in FIELDS:
        assert FIELD_OPTIONS[f.name] == f.option


def test_docs_options_md_is_generated_from_the_table():
    """Regenerate with `python3 -m tui.plan_fields > docs/options.md`."""
    assert (REPO / "docs/options.md").read_text() == markdown()


def test_the_docs_table_has_a_row_per_field_with_its_option():
    rows = [line for line in markdown().splitlines() if line.startswith("| `--")]
    assert [r.split("`")[1].split()[0] for r in rows] == [f.option for f in FIELDS]
