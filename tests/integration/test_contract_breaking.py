"""The wire contract (protos/) against its recorded baseline, with the buf that `make lint` runs.

The Makefile's ``CONTRACT_BASELINE`` (``protos/baseline/lmforge.json``) is a buf image of the
released contract (JSON, without source info; ``make contract-baseline`` re-records it), and
``make lint`` runs ``buf breaking`` against it with the rules of ``buf.yaml`` (FILE: wire, JSON
and generated-code compatibility). The check must pass on the real protos, pass on compatible
edits, and fail, naming the change, on a copy with a deliberately incompatible edit. The last
test checks that ``buf.gen.yaml``'s managed mode gives generated Go and Java code their package
names, with a local plugin that reports the file options buf hands to plugins (the real Go/Java
plugins are remote ones).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.buf import MAKEFILE, buf_command, contract_baseline

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BASELINE = contract_baseline()
V1 = Path("protos") / "lmforge" / "v1"
CONTRACT_FILES = {
    f"lmforge/v1/{name}.proto"
    for name in ("classify", "common", "embed", "generate", "inference_service", "models")
}


@pytest.fixture(scope="module")
def buf() -> list[str]:
    return buf_command()


def _run(command: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, timeout=240, check=False
    )


def _breaking(buf: list[str], root: Path) -> tuple[int, list[dict[str, Any]], str]:
    """``buf breaking --against <baseline>`` (as ``make lint``) in ``root``: code, findings,
    stderr."""
    result = _run([*buf, "breaking", "--against", str(BASELINE), "--error-format", "json"], root)
    findings = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    return result.returncode, findings, result.stderr


def _edited_copy(tmp_path: Path, file: str, old: str, new: str) -> Path:
    """A copy of protos/ and buf.yaml with ``old`` replaced by ``new`` in one .proto file."""
    copy = tmp_path / "checkout"
    shutil.copytree(ROOT / "protos", copy / "protos")
    shutil.copy2(ROOT / "buf.yaml", copy / "buf.yaml")
    path = copy / V1 / file
    text = path.read_text(encoding="utf-8")
    assert text.count(old) == 1, f"{old!r} is not exactly once in {file}"
    path.write_text(text.replace(old, new), encoding="utf-8")
    return copy


def test_baseline_is_a_json_image_of_the_contract_without_source_info() -> None:
    image = json.loads(BASELINE.read_text(encoding="utf-8"))
    contract = {f["name"] for f in image["file"] if not f.get("bufExtension", {}).get("isImport")}
    assert contract >= CONTRACT_FILES
    assert all(f["package"].startswith("lmforge.") for f in image["file"] if f["name"] in contract)
    # comment-only edits must not churn the baseline: no source info is recorded
    assert not any("sourceCodeInfo" in f for f in image["file"])


def test_make_lint_runs_buf_breaking_against_the_baseline() -> None:
    """`make test` depends on `make lint`; its recipe is where CI checks the contract."""
    makefile = MAKEFILE.read_text(encoding="utf-8")
    assert re.search(r"^test:.*\blint\b", makefile, re.MULTILINE), "make test does not run lint"
    recipe = re.search(r"^lint:.*\n((?:\t.*\n)+)", makefile, re.MULTILINE)
    assert recipe, "the Makefile has no lint target"
    assert "\t$(BUF) breaking --against $(CONTRACT_BASELINE)\n" in recipe.group(1)


def test_protos_are_compatible_with_the_recorded_baseline(buf: list[str]) -> None:
    code, findings, stderr = _breaking(buf, ROOT)
    assert (code, findings) == (0, []), stderr


@pytest.mark.parametrize(
    ("file", "old", "new"),
    [
        pytest.param(
            "models.proto",
            "  string routing = 12;\n",
            "  string routing = 12;\n  // Who owns the model.\n  string owner = 13;\n",
            id="field-added",
        ),
        pytest.param(
            "embed.proto",
            "  uint32 dimensions = 2;",
            "  uint32 dimensions = 2 [deprecated = true];",
            id="field-deprecated",
        ),
        pytest.param(
            "embed.proto",
            "  // Width of every vector in `embeddings`.\n",
            "  // Width of each vector in `embeddings` (a comment edit).\n",
            id="comment-edited",
        ),
    ],
)
def test_a_compatible_change_passes(
    buf: list[str], tmp_path: Path, file: str, old: str, new: str
) -> None:
    copy = _edited_copy(tmp_path, file, old, new)
    code, findings, stderr = _breaking(buf, copy)
    assert (code, findings) == (0, []), stderr


@pytest.mark.parametrize(
    ("file", "old", "new", "rule", "named"),
    [
        pytest.param(
            "embed.proto",
            "  uint32 dimensions = 2;",
            "  int32 dimensions = 2;",
            "FIELD_SAME_TYPE",
            ['"dimensions"', '"EmbedResponse"', '"uint32"', '"int32"'],
            id="field-type-changed",
        ),
        pytest.param(
            "classify.proto",
            "  int32 top_k = 4;",
            "  int32 top_k = 6;",
            "FIELD_NO_DELETE",
            ['field "4"', '"top_k"', '"ClassifyRequest"'],
            id="field-renumbered",
        ),
        pytest.param(
            "models.proto",
            "  bool regression = 9;\n",
            "",
            "FIELD_NO_DELETE",
            ['field "9"', '"regression"', '"ModelInfo"'],
            id="field-deleted-without-reserving",
        ),
        pytest.param(
            "models.proto",
            "  bool regression = 9;\n",
            '  reserved 9;\n  reserved "regression";\n',
            "FIELD_NO_DELETE",
            ['field "9"', '"regression"', '"ModelInfo"'],
            # FILE rules: generated code would lose the field, so v1 only deprecates
            id="field-deleted-even-if-reserved",
        ),
        pytest.param(
            "embed.proto",
            "  repeated string inputs = 2;",
            "  repeated string texts = 2;",
            "FIELD_SAME_NAME",
            ['"inputs"', '"texts"', '"EmbedRequest"'],
            id="field-renamed",
        ),
    ],
)
def test_an_incompatible_change_fails_and_is_named(
    buf: list[str],
    tmp_path: Path,
    file: str,
    old: str,
    new: str,
    rule: str,
    named: list[str],
) -> None:
    copy = _edited_copy(tmp_path, file, old, new)
    code, findings, stderr = _breaking(buf, copy)
    assert code != 0, "buf breaking accepted an incompatible change"
    matching = [f for f in findings if f["type"] == rule]
    assert matching, (findings, stderr)
    assert matching[0]["path"] == f"{V1.as_posix()}/{file}"
    message = matching[0]["message"]
    assert all(part in message for part in named), message


_OPTIONS_PLUGIN = """\
#!{python}
# A protoc plugin that writes the Go/Java file options buf passes (after managed mode).
import json, sys
from google.protobuf.compiler import plugin_pb2

request = plugin_pb2.CodeGeneratorRequest.FromString(sys.stdin.buffer.read())
response = plugin_pb2.CodeGeneratorResponse(
    supported_features=plugin_pb2.CodeGeneratorResponse.FEATURE_PROTO3_OPTIONAL
)
options = {{
    f.name: {{
        "go_package": f.options.go_package,
        "java_package": f.options.java_package,
        "java_multiple_files": f.options.java_multiple_files,
    }}
    for f in request.proto_file
    if f.name in request.file_to_generate
}}
first = sorted(request.file_to_generate)[0]
response.file.add(name=first + ".options.json", content=json.dumps(options))
sys.stdout.buffer.write(response.SerializeToString())
"""


def test_managed_mode_gives_go_and_java_their_packages(buf: list[str], tmp_path: Path) -> None:
    template = yaml.safe_load((ROOT / "buf.gen.yaml").read_text(encoding="utf-8"))
    assert template["version"] == "v2"
    plugin = tmp_path / "protoc-gen-options"
    plugin.write_text(textwrap.dedent(_OPTIONS_PLUGIN.format(python=sys.executable)))
    plugin.chmod(0o755)
    out = tmp_path / "out"
    inspect = {
        "version": "v2",
        "managed": template["managed"],
        "plugins": [{"local": str(plugin), "out": str(out)}],
    }
    result = _run([*buf, "generate", "--template", json.dumps(inspect)], ROOT)
    assert result.returncode == 0, result.stderr
    options: dict[str, Any] = {}
    for written in out.rglob("*.options.json"):
        options.update(json.loads(written.read_text(encoding="utf-8")))
    assert set(options) == CONTRACT_FILES
    for name, found in options.items():
        assert found == {
            "go_package": "github.com/lmforge/lmforge/gen/go/lmforge/v1;lmforgev1",
            "java_package": "com.lmforge.v1",
            "java_multiple_files": True,
        }, name
