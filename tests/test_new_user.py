"""What a new user meets first: the README's quick start and corpus notes, and the bf16 warning before
training on a CPU that would emulate bf16."""

from __future__ import annotations

import re
import textwrap

from harness.cell import precision
from harness.cell.precision import bf16_warning, cpu_flags_have_bf16
from harness.cli import main
from harness.spec.config import CellConfig

from conftest import REPO

README = (REPO / "README.md").read_text(encoding="utf-8")
EPYC = "processor\t: 0\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu sse2 avx avx2 fma\n"
SAPPHIRE = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"


def quick_start() -> str:
    return README.split("## Quick start", 1)[1].split("```bash", 1)[1].split("```", 1)[0]


def test_the_quick_start_installs_the_cpu_build_of_torch_and_tests_with_plain_pytest():
    lines = quick_start().strip().splitlines()
    assert "pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu" in lines
    assert "pip install -e . && harness run suites/quick.yaml" in lines
    assert lines[-1].endswith("&& pytest")  # the command CI calls
    assert not any("pip install torch" in line and "-e ." in line for line in lines)


def test_the_readme_gives_one_time_for_the_quick_suite():
    section = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    assert "about 10 minutes" not in section and "4 min 50 s on a quiet 2-core CPU" in section
    assert "a busy machine takes\nlonger, and the live ETA follows the real speed" in section


def test_the_readme_names_the_corpus_setting_run_accepts_and_what_the_cleaning_keeps():
    assert "--corpus PATH" not in README and "`--set data.corpus=PATH`" in README
    assert re.search(r"keeps only the letters A-Z, lower-cased", README)


def test_cpu_flags_tell_native_bf16():
    assert cpu_flags_have_bf16(EPYC) is False
    assert cpu_flags_have_bf16(SAPPHIRE) is True
    assert cpu_flags_have_bf16("processor\t: 0\nmodel name\t: Apple M2\n") is None  # no flags: cannot say


def test_the_bf16_warning_is_for_cpu_cells_on_a_cpu_without_native_bf16():
    bf16_cpu, bf16_cuda, fp32 = (CellConfig(precision="bf16"), CellConfig(precision="bf16", device="cuda"),
                                 CellConfig())
    warning = bf16_warning([bf16_cpu, bf16_cuda, fp32, bf16_cpu], native=False)
    assert warning.startswith("warning: 2 CPU cells train in bf16") and "no native bf16" in warning
    assert bf16_warning([bf16_cpu], native=False).startswith("warning: 1 CPU cell trains in bf16")
    assert bf16_warning([bf16_cpu], native=True) == ""
    assert bf16_warning([bf16_cuda, fp32], native=False) == ""


def test_harness_list_warns_before_a_bf16_run_on_such_a_cpu(tmp_path, capsys, monkeypatch):
    suite = tmp_path / "s.yaml"
    suite.write_text(textwrap.dedent("""
        name: s
        model: {hidden: 8}
        matrix: {precision: [fp32, bf16]}
    """))
    monkeypatch.setattr(precision, "cpu_flags_have_bf16", lambda: False)
    assert main(["list", str(suite)]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("warning: 1 CPU cell trains in bf16")
    for answer in (True, None):  # native bf16, or no flags to tell by: no warning
        monkeypatch.setattr(precision, "cpu_flags_have_bf16", lambda: answer)
        assert main(["list", str(suite)]) == 0
        assert "bf16" not in capsys.readouterr().out.splitlines()[-1]


def test_the_samples_table_speaks_of_the_training_text_not_of_a_book():
    # A run on one's own text (a licence, a manual) is not a book: the share of generated words found in the
    # training text is named for the text.
    import pandas as pd

    from harness.report.tables import samples_table

    cells = pd.DataFrame({"cell_id": ["gru-l1-uni-cpu-s0"], "status": ["ok"], "cell": ["gru"], "layers": [1],
                          "direction": ["uni"], "device": ["cpu"], "seed": [0]})
    samples = pd.DataFrame({"cell_id": ["gru-l1-uni-cpu-s0"], "prefix": ["the "], "text": ["the licence grants"]})
    table = samples_table(samples, cells, {"the", "licence"})
    assert "words in text" in table.columns and not any("book" in c for c in table.columns)
