"""w2s report: the page's content from a run folder, and its rendering in a real headless browser."""
import base64
import json
import re
import shutil
import subprocess

import pytest

from tests.run_folders import png_pixels, write_run
from w2s.results import report
from w2s.cli import main


@pytest.fixture(scope="module")
def run_report(tmp_path_factory):
    """A run of quickstart with one override, and its report (written once: plotting takes seconds)."""
    root = write_run(tmp_path_factory.mktemp("report") / "run", overrides=["--config.strong.train.lr=3e-5"])
    return root, report.write_report(root)


def test_report_holds_config_differences_versions_results_plots_and_timings(run_report):
    root, (html_path, md_path) = run_report
    page, markdown = html_path.read_text(), md_path.read_text()
    for text in (page, markdown):
        assert "strong.train.lr" in text and "0.0001" in text and "3e-05" in text  # the default and this run's
        assert "output_dir" not in text.split("Full config")[0]  # where it ran is no difference
        assert "jax" in text and "1 x cpu" in text
        assert "Seeds ran with different w2s_commit" in text
        assert "aux_conf" in text and "PGR [95% CI]" in text
    # Every plot and every seed's curves are in the page, embedded, and linked from the Markdown.
    pngs = ["pgr.png", "accuracy.png", "curves_seed_0.png", "curves_seed_1.png", "curves_seed_2.png"]
    embedded = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert sorted(base64.b64decode(e) for e in embedded) == sorted((root / p).read_bytes() for p in pngs)
    assert all(f"]({p})" in markdown for p in pngs)
    assert "src=\"http" not in page and "<link" not in page  # nothing outside the page
    # Timings: one row per seed, the stages' seconds and their total.
    assert re.search(r"\| 2 +\| +12\.0 \| +12\.0 \| +12\.0 \| +12\.0 \| +48\.0 \|", markdown)


def test_report_without_command_file_asks_for_the_defaults(run_report, tmp_path):
    root = write_run(tmp_path / "run", seeds=(0,))
    (root / report.COMMAND_FILE).unlink()
    html_path, _ = report.write_report(root)
    assert "pass --defaults FILE" in html_path.read_text()
    assert main(["report", str(root), "--defaults", str(run_report[0] / "missing.py")]) == 0
    assert "is not there any more" in html_path.read_text()


# Marks the page once every image has loaded with real pixels; --dump-dom then shows the mark.
_PROBE = """<script>window.addEventListener("load", () => {
  const images = [...document.images];
  document.body.dataset.images = images.filter(i => i.complete && i.naturalWidth > 100).length;
  document.body.dataset.tables = [...document.querySelectorAll("table")].filter(t => t.rows.length > 1).length;
});</script>"""


@pytest.mark.skipif(shutil.which("chromium") is None,
                    reason="needs Debian's chromium for a real browser (apt-get install chromium; make install-test does)")
def test_report_renders_in_a_headless_browser(run_report, tmp_path):
    html_path = run_report[1][0]
    page = html_path.read_text()
    probed = tmp_path / "probed.html"
    probed.write_text(page.replace("</body>", _PROBE + "</body>"))
    browser = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    dom = subprocess.run([*browser, "--virtual-time-budget=10000", "--dump-dom", probed.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    assert f'data-images="{page.count("<img ")}"' in dom  # every image decoded
    assert f'data-tables="{page.count("<table>")}"' in dom and page.count("<table>") >= 4
    shot = tmp_path / "page.png"
    subprocess.run([*browser, f"--screenshot={shot}", "--window-size=1200,2400", html_path.as_uri()],
                   capture_output=True, timeout=120, check=True)
    pixels = png_pixels(shot)
    colourful = (pixels.max(-1) - pixels.min(-1)) > 0.3  # plot colours, not text or table rules
    assert colourful.mean() > 0.005, "the screenshot shows no plot"
    assert (pixels.mean(-1) < 0.5).mean() > 0.002, "the screenshot shows no text"


def test_report_of_a_sweep(tmp_path):
    from tests.run_folders import write_sweep

    root = write_sweep(tmp_path / "sweep")
    html_path, md_path = report.write_report(root)
    markdown = md_path.read_text()
    assert "median PGR [95% CI]" in markdown and "bootstrap" in markdown
    assert all(f"]({p})" in markdown for p in ("accuracy.png", "pgr.png", "median_pgr.png", "pgr_vs_size.png"))
    assert "Not recorded by this folder's runs." in markdown  # a sweep's table keeps no versions or timings


def test_a_real_run_quiet_with_tensorboard_then_its_report(tmp_path, tiny_bert, capsys):
    """`w2s run --quiet --tensorboard` on the tiny model: one line per stage, a TensorBoard log per
    stage, the command recorded; the report then names the overrides against quickstart's defaults."""
    pytest.importorskip("tensorboardX")
    from tests.test_curves import read_scalars
    from tests.test_pipeline import ROOT, small_overrides
    from w2s.tasks import fingerprint, load_task

    overrides = small_overrides(tmp_path, tiny_bert, "--config.losses=xent,")
    assert main(["run", str(ROOT / "experiments" / "quickstart.py"), "--quiet", "--tensorboard", *overrides]) == 0
    out = capsys.readouterr()
    lines = [line for line in out.out.splitlines() if line.startswith("[")]
    assert [line.split("] ")[1].split(":")[0] for line in lines] == ["seed 0 weak", "seed 0 ceiling", "seed 0 student_xent"]
    assert "step/s" not in out.err  # no bars in quiet mode
    run_dir = tmp_path / "results" / "seed_0"
    for stage in ("weak", "ceiling", "student_xent"):
        history = json.loads((run_dir / f"{stage}.json").read_text())["history"]
        assert read_scalars(run_dir / "tensorboard" / stage)[("loss", history[0]["step"])] == pytest.approx(history[0]["loss"])
    results = json.loads((run_dir / "results.json").read_text())
    assert results["test_split"] == fingerprint(load_task("wordnet_living", 0, n_train=64, n_test=32).test)

    html_path, md_path = report.write_report(tmp_path / "results")
    markdown = md_path.read_text()
    assert "| task_options.n_test " in markdown and "| weak.num_layers " in markdown
    assert "--tensorboard" in markdown  # the command line
    assert "curves_seed_0.png" in markdown

