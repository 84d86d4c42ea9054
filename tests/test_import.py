"""What importing the package costs: no benchmark peers, no plotting, no model."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.conftest import REPO


def test_import_fewshot_loads_neither_setfit_nor_matplotlib_nor_a_model():
    # an import hook makes the eval extra absent, as in an install without it
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(REPO)!r})

        class NoEvalExtra:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("setfit", "matplotlib"):
                    raise ImportError(f"{{name}} is not installed")
                return None

        sys.meta_path.insert(0, NoEvalExtra())
        import fewshot
        from fewshot.cli import build_parser
        build_parser()
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("setfit", "matplotlib", "torch", "transformers"))
        print(",".join(heavy))
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", out.stdout


def test_everything_the_readme_documents_is_exported():
    """Every name the README imports from fewshot, and every class it names in backticks, is exported."""
    import builtins
    import re

    import fewshot

    readme = (REPO / "README.md").read_text()
    imported = {n.strip() for line in re.findall(r"from fewshot import ([\w, ]+)", readme) for n in line.split(",")}
    named = set(re.findall(r"`(\w+(?:Head|Encoder|Classifier|Error|Index))`", readme))
    assert {"FewShotClassifier", "EmbeddingIndex", "CacheAdapterHead", "MissingDependencyError"} <= imported | named
    missing = sorted(n for n in imported | named if not hasattr(fewshot, n) and not hasattr(builtins, n))
    assert not missing, missing
    assert set(fewshot.__all__) <= set(dir(fewshot))
