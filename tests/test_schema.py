"""rules/schema.json: the JSON Schema of the configuration, generated from the field tables.

The committed file is what rules/schema.py writes now (`make schema`); every
example and every golden configuration validates; a handful of wrong files are
refused by the schema and by load_config alike.
"""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import jsonschema
import pytest
import yaml

from reshaper.rules import schema
from reshaper.rules.config import load_config
from reshaper.rules.model import ConfigError
from tests.helpers import golden

ROOT = Path(__file__).parent.parent
SCHEMA = json.loads((ROOT / "rules" / "schema.json").read_text(encoding="utf-8"))
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)


def found(folder: Path) -> list[Path]:
    """The rule files in folder; none is an error, never a test run over nothing."""
    paths = sorted(folder.glob("*.yaml"))
    assert paths, f"no *.yaml in {folder}"
    return paths


EXAMPLES = found(ROOT / "examples")
GOLDEN = found(golden.GOLDEN)


def errors(doc) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in VALIDATOR.iter_errors(doc)]


def test_the_committed_schema_is_the_generated_one():
    assert (ROOT / "rules" / "schema.json").read_text(encoding="utf-8") == schema.text(), \
        "rules/schema.json is stale: run make schema"


def test_schema_is_valid_2020_12():
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_every_property_has_a_description():
    def walk(node, where):
        if isinstance(node, dict):
            for name, sub in node.get("properties", {}).items():
                assert "description" in sub, f"{where}/{name} has no description"
            for key, sub in node.items():
                walk(sub, f"{where}/{key}")
        elif isinstance(node, list):
            for i, sub in enumerate(node):
                walk(sub, f"{where}/{i}")
    walk(SCHEMA, "")


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_examples_validate(path: Path):
    assert errors(yaml.safe_load(path.read_text(encoding="utf-8"))) == []


@pytest.mark.parametrize("path", GOLDEN, ids=[p.stem for p in GOLDEN])
def test_golden_configs_validate(path: Path):
    assert errors(yaml.safe_load(path.read_text(encoding="utf-8"))["config"]) == []


HEAD = """\
version: 1
ports: {a: eth0.100, b: eth0.200}
"""
WRONG = {
    "version-2": "version: 2\nports: {a: eth0.100, b: eth0.200}\n",
    "no-ports": "version: 1\nrules: []\n",
    "unknown-top-key": HEAD + "rule: []\n",
    "port-vlan-4095": "version: 1\nports: {a: {interface: eth0, vlan: 4095}, b: eth0.200}\n",
    "port-without-vlan": "version: 1\nports: {a: {interface: eth0}, b: eth0.200}\n",
    "rule-without-name": HEAD + "rules: [{actions: [drop]}]\n",
    "rule-name-uppercase": HEAD + "rules: [{name: Web, actions: [drop]}]\n",
    "unknown-match-field": HEAD + "rules: [{name: r, match: {dport: 80}}]\n",
    "bad-mac": HEAD + "rules: [{name: r, match: {eth_src: '02:00:00:00:00'}}]\n",
    "bad-tcp-flag": HEAD + "rules: [{name: r, match: {tcp_flags: 'syn,bogus'}}]\n",
    "port-out-of-range": HEAD + "rules: [{name: r, match: {dst_port: 65536}}]\n",
    "time-without-unit": HEAD + "rules: [{name: r, actions: [{delay: {time: 20}}]}]\n",
    "probability-150%": HEAD + "rules: [{name: r, actions: [{loss: {probability: 150%}}]}]\n",
    "probability-above-1": HEAD + "rules: [{name: r, actions: [{corrupt: {probability: 1.5}}]}]\n",
    "bitrate-mbps": HEAD + "rules: [{name: r, actions: [{rate: {bitrate: 10mbps}}]}]\n",
    "unknown-action": HEAD + "rules: [{name: r, actions: [shape]}]\n",
    "bare-word-needs-params": HEAD + "rules: [{name: r, actions: [delay]}]\n",
    "two-actions-in-one-item": HEAD + "rules: [{name: r, actions: [{drop: null, dec_ttl: null}]}]\n",
    "empty-set": HEAD + "rules: [{name: r, actions: [{set: {}}]}]\n",
    "push-vlan-without-vlan": HEAD + "rules: [{name: r, actions: [{push_vlan: {pcp: 1}}]}]\n",
    "gilbert-elliott-without-r": HEAD + "rules: [{name: r, actions: [{loss: {model: gilbert-elliott, p: 1%}}]}]\n",
    "payload-bad-hex": HEAD + "rules: [{name: r, actions: [{payload: {offset: 0, value: '0x123'}}]}]\n",
}


@pytest.mark.parametrize("name", WRONG)
def test_wrong_files_are_rejected(name: str, tmp_path: Path):
    text = WRONG[name]
    assert errors(yaml.safe_load(text)), f"the schema accepts:\n{textwrap.indent(text, '  ')}"
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError):
        load_config(str(path))
