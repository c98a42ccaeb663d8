"""MkDocs hook: serve MathJax from the installed package instead of a CDN.

The docs extra installs ``django-static-mathjax`` (MathJax 3, as static files, with no
dependencies). Its ``tex-chtml.js`` and the fonts it loads are added to the site under
``assets/mathjax/``. Without the package the page loads MathJax from jsDelivr instead.
"""

from __future__ import annotations

import importlib.util
import logging
import pathlib

from mkdocs.structure.files import File

log = logging.getLogger("mkdocs.hooks.mathjax")
CDN = "https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-chtml.js"
SCRIPT = "tex-chtml.js"
FONTS = "output/chtml/fonts/woff-v2"
DEST = "assets/mathjax"


def _es5() -> pathlib.Path | None:
    spec = importlib.util.find_spec("mathjax")
    if spec is None or not spec.submodule_search_locations:
        return None
    es5 = pathlib.Path(next(iter(spec.submodule_search_locations))) / "static" / "mathjax" / "es5"
    return es5 if (es5 / SCRIPT).is_file() else None


def on_config(config, **kwargs):
    es5 = _es5()
    config.extra_javascript.append(f"{DEST}/{SCRIPT}" if es5 else CDN)
    if es5 is None:
        log.info("django-static-mathjax is not installed: the pages load MathJax from %s", CDN)
    return config


def on_files(files, config, **kwargs):
    es5 = _es5()
    if es5 is None:
        return files
    for src in [es5 / SCRIPT, *sorted((es5 / FONTS).glob("*.woff"))]:
        dest = f"{DEST}/{src.relative_to(es5).as_posix()}"
        files.append(File.generated(config, dest, abs_src_path=str(src)))
    return files
