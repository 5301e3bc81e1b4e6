from pathlib import Path

from lowbit_flex.quant.fpx_format import preset_table_markdown


def test_docs_preset_table_is_generated_from_the_presets():
    doc = (Path(__file__).resolve().parents[2] / "docs" / "float_quantization.md").read_text()
    assert preset_table_markdown() in doc, "regenerate the table in docs/float_quantization.md from the presets"
