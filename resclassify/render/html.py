"""The eval report as one self-contained HTML page: what it shows is picked while records stream, then drawn once.

Inline CSS and script, thumbnails as JPEG data URIs, a Content-Security-Policy that lets the page
load nothing from anywhere; written whole by write_html_report.
"""

import base64
import functools
import hashlib
import heapq
import html
import os
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

from ..errors import InputError
from ..files import write_atomically
from ..images import thumbnail_jpeg
from ..sources.remote import RemoteImage, is_url, read_bytes, url_scheme
from ..sources.tars import MemberReader
from ..streams import text_safe
from .summary import summary_parts

DEFAULT_REPORT_IMAGES = 200
THUMBNAIL_SIDE = 160
# Shown per confusion, and the share of the thumbnail budget the confusions may take together.
EXAMPLES_PER_CONFUSION = 3
CONFUSION_SHARE = 4
PREDICTIONS_SHOWN = 5
FAILED_SHOWN = 500
THUMBNAIL_WORKERS = 8


@functools.total_ordering
class Confidence:
    """How sure the network was of a wrong top-1; among equals, the earlier path ranks higher.

    Ordering by (probability, path) both ways makes the choice of images the same whatever order
    the records arrive in (shards merged, workers finishing out of turn).
    """

    __slots__ = ("probability", "path")

    def __init__(self, probability, path):
        self.probability = probability
        self.path = path

    def __eq__(self, other):
        return (self.probability, self.path) == (other.probability, other.path)

    def __lt__(self, other):
        if self.probability != other.probability:
            return self.probability < other.probability
        return self.path > other.path


def _keep_best(heap, size, item):
    """Keep the `size` greatest items seen in a min-heap."""
    if len(heap) < size:
        heapq.heappush(heap, item)
    elif heap and heap[0] < item:
        heapq.heapreplace(heap, item)


class ReportCollector:
    """Sees every eval record once and keeps only what the page needs, in memory bounded by max_images.

    The most confident mistakes (with their top-5) for the grid, and for each (true, predicted)
    pair the paths of its few most confident mistakes; nothing else of a record is held.
    """

    def __init__(self, max_images=DEFAULT_REPORT_IMAGES):
        self.max_images = max_images
        self.misclassified = 0
        self._mistakes = []
        self._examples = {}
        self._order = 0

    def add(self, record):
        predictions = record.get("predictions")
        if "error" in record or not predictions:
            return
        true = record["true"]
        best = predictions[0]
        hit = record.get("hit@1")
        if hit is None:
            hit = best["index"] == true["index"]
        if hit:
            return
        self.misclassified += 1
        confidence = Confidence(float(best["probability"]), str(record["path"]))
        pair = (true["index"], best["index"])
        _keep_best(self._examples.setdefault(pair, []), EXAMPLES_PER_CONFUSION, confidence)
        if self.max_images > 0:
            entry = {"path": confidence.path, "true": true,
                     "predictions": [{"index": p["index"], "label": p["label"], "wnid": p.get("wnid"),
                                      "probability": float(p["probability"])} for p in predictions[:PREDICTIONS_SHOWN]]}
            if "real_labels" in record:
                entry["real_labels"] = list(record["real_labels"])
            _keep_best(self._mistakes, self.max_images, (confidence, entry))

    def examples(self, true_index, predicted_index):
        """Paths of a confusion's most confident mistakes, most confident first."""
        return [c.path for c in sorted(self._examples.get((true_index, predicted_index), ()), reverse=True)]

    def most_confident_mistakes(self):
        """The kept mistakes' entries, most confident first (ties by path)."""
        return [entry for _, entry in sorted(self._mistakes, key=lambda item: item[0], reverse=True)]


def plan_thumbnails(report, collector):
    """Which images get a thumbnail where: ({confusion number: [paths]}, [grid entries]); at most max_images in all.

    The confusions take up to a quarter of the budget, their first examples first; the grid of
    misclassified images has the rest, most confident mistakes first.
    """
    budget = collector.max_images
    per_confusion = [collector.examples(c["true"]["index"], c["predicted"]["index"]) for c in report["confusions"]]
    confusion_budget = min(sum(map(len, per_confusion)), budget // CONFUSION_SHARE)
    chosen = {n: [] for n in range(len(per_confusion))}
    used = 0
    for depth in range(EXAMPLES_PER_CONFUSION):
        for n, paths in enumerate(per_confusion):
            if used < confusion_budget and depth < len(paths):
                chosen[n].append(paths[depth])
                used += 1
    grid = collector.most_confident_mistakes()[:budget - used]
    return chosen, grid


def make_thumbnails(paths, side=THUMBNAIL_SIDE, workers=THUMBNAIL_WORKERS):
    """path -> (jpeg bytes, width, height), or the InputError saying why there is none."""
    members = MemberReader()

    def one(path):
        try:
            if is_url(path):  # an image in a bucket: its bytes fetched as the run fetched them
                return thumbnail_jpeg(path, side, data=read_bytes(RemoteImage(path, path)))
            if not os.path.exists(path):
                data = members.read(path)  # a member of a local tar shard, or None
                if data is not None:
                    return thumbnail_jpeg(path, side, data=data)
            return thumbnail_jpeg(path, side)
        except InputError as exc:
            return exc
        except Exception as exc:  # a report must not die for one preview; say why it is missing
            return InputError(path, f"{type(exc).__name__}: {exc}")

    unique = list(dict.fromkeys(paths))
    if not unique:
        return {}
    with ThreadPoolExecutor(max_workers=min(workers, len(unique)), thread_name_prefix="resclassify-thumb") as pool:
        return dict(zip(unique, pool.map(one, unique)))


# ---------------------------------------------------------------------------------------------
# Drawing the page. Every piece of text that came from a file name, a label, a class index or a
# report goes through esc(); what is interpolated bare is the page's own (constants, the style,
# the script, base64 data) or numbers written through a numeric format ({:,}, {:.1f}), which can
# only give digits. The page carries no data in its script: nothing there to escape.

def esc(value):
    return html.escape("" if value is None else str(value), quote=True)


def _class_name(cls):
    return f"{cls['index']} {cls['label']}"


def _filter_attributes(*classes):
    """What the class filter matches: indices exactly, labels and WordNet ids by substring."""
    indices = " ".join(str(c["index"]) for c in classes)
    text = " ".join(f"{c['label']} {c.get('wnid') or ''}" for c in classes).lower()
    return f'data-classes="{esc(indices)}" data-text="{esc(text)}"'


def _accuracy_colour(fraction):
    """Red for 0%, amber around 50%, green for 100%."""
    return f"hsl({round(120 * max(0.0, min(1.0, fraction)))}, 62%, 42%)"


def _bar(fraction, colour=None, label=""):
    width = f"{100 * max(0.0, min(1.0, fraction)):.1f}%"
    style = f"width:{width}" + (f";background:{colour}" if colour else "")
    return f'<span class="bar" role="img" aria-label="{esc(label)}"><span style="{style}"></span></span>'


def _href(path, report_folder):
    """A relative link from the report to the full image, for when both are still where they were; a web URL as it
    is, and none for another store's (s3://, which no browser opens) or for a member of a tar shard (no file)."""
    if is_url(path):
        return path if url_scheme(path) in ("http", "https") and ".tar/" not in path else None
    if ".tar/" in path and not os.path.exists(path):
        return None
    try:
        relative = os.path.relpath(os.path.abspath(path), report_folder)
    except ValueError:  # another drive on Windows
        return None
    # From the name's bytes, so that one that is not UTF-8 still links to its file (%E9).
    return urllib.parse.quote(os.fsencode(relative.replace(os.sep, "/")))


def _thumbnail(path, thumbnails, report_folder, small=False):
    made = thumbnails.get(path)
    css = "thumb small" if small else "thumb"
    if made is None or isinstance(made, InputError):
        reason = made.reason if isinstance(made, InputError) else "no preview"
        return (f'<div class="{css} missing" title="{esc(path)}: {esc(reason)}">'
                f'<span>no preview</span><small>{esc(reason)}</small></div>')
    jpeg, width, height = made
    data = base64.b64encode(jpeg).decode("ascii")
    image = (f'<img src="data:image/jpeg;base64,{data}" width="{width}" height="{height}" '
             f'alt="{esc(os.path.basename(path))}" title="{esc(path)}">')
    href = _href(path, report_folder)
    if href:
        image = f'<a href="{esc(href)}">{image}</a>'
    return f'<div class="{css}">{image}</div>'


def _summary_section(report, summary):
    heading, fields, unmatched, accuracy, confidence, throughput = summary
    items = []
    for label, text in fields:
        if label:
            items.append(f"<dt>{esc(label)}</dt><dd>{esc(text)}</dd>")
        else:
            items.append(f'<dt></dt><dd class="note">{esc(text)}</dd>')
    for line in unmatched:
        items.append(f'<dt></dt><dd class="note">{esc(line)}</dd>')
    tiles = []
    for name, accuracy_text, interval, error, correct in accuracy:
        tiles.append(
            f'<div class="tile"><div class="tile-name">{esc(name)}</div>'
            f'<div class="tile-value">{esc(accuracy_text)}</div>'
            f'<div class="tile-detail"><span>95% CI</span> {esc(interval)}</div>'
            f'<div class="tile-detail"><span>error</span> {esc(error)}</div>'
            f'<div class="tile-detail"><span>correct</span> {esc(correct)}</div></div>')
    footer = [esc(confidence)] + ([esc(throughput)] if throughput else [])
    return (f'<section id="summary"><h2>Summary</h2>'
            f'<div class="tiles">{"".join(tiles)}</div>'
            f'<dl class="fields">{"".join(items)}</dl>'
            f'<p class="muted">{" · ".join(footer)}</p></section>')


def _per_class_section(report):
    rows = report["per_class"]
    ks = [name[3:] for name in report["accuracy"]]
    with_wnids = any(row.get("wnid") for row in rows)
    head = ['<th data-sort="number">class</th>']
    if with_wnids:
        head.append('<th data-sort="text">WordNet id</th>')
    head.append('<th data-sort="number" class="num">images</th>')
    head.append('<th data-sort="number" class="num" aria-sort="ascending">top-1</th>')
    head += [f'<th data-sort="number" class="num">top-{esc(k)}</th>' for k in ks if k != "1"]
    head.append('<th data-sort="number" class="num">missed</th>')
    # Worst first, as the terminal's "worst classes": then more images first, then by index.
    ordered = sorted(rows, key=lambda r: (r["top1_correct"] / r["images"], -r["images"], r["index"]))
    body = []
    for row in ordered:
        fraction = row["top1_correct"] / row["images"]
        cells = [f'<td data-value="{esc(row["index"])}">'
                 f'<span class="idx">{esc(row["index"])}</span> {esc(row["label"])}</td>']
        if with_wnids:
            cells.append(f'<td class="mono">{esc(row.get("wnid"))}</td>')
        cells.append(f'<td class="num" data-value="{row["images"]:d}">{row["images"]:,}</td>')
        cells.append(f'<td class="num acc" data-value="{fraction:.6f}">'
                     f'{_bar(fraction, _accuracy_colour(fraction), f"{100 * fraction:.1f}%")}'
                     f'<span class="pct">{100 * fraction:.1f}%</span>'
                     f'<span class="frac">{row["top1_correct"]:,}/{row["images"]:,}</span></td>')
        for k in ks:
            if k != "1":
                kfraction = row[f"top{k}_correct"] / row["images"]
                cells.append(f'<td class="num" data-value="{kfraction:.6f}">{100 * kfraction:.1f}%</td>')
        missed = row["images"] - row["top1_correct"]
        cells.append(f'<td class="num" data-value="{missed:d}">{missed:,}</td>')
        body.append(f'<tr {_filter_attributes(row)}>{"".join(cells)}</tr>')
    count = len(rows)
    return (f'<section id="classes"><h2>Per-class accuracy <span class="count">{count:,} '
            f'class{"" if count == 1 else "es"}</span></h2>'
            f'<p class="muted">Worst top-1 first; click a column to sort by it.</p>'
            f'<div class="table-scroll"><table class="sortable" id="class-table"><thead><tr>{"".join(head)}</tr>'
            f'</thead><tbody>{"".join(body)}</tbody></table></div></section>')


def _confusions_section(report, examples, thumbnails, report_folder):
    if not report["confusions"]:
        return ('<section id="confusions"><h2>Most frequent confusions</h2>'
                '<p class="muted">No top-1 mistakes.</p></section>')
    rows = []
    largest = max(c["count"] for c in report["confusions"])
    for n, confusion in enumerate(report["confusions"]):
        true, predicted = confusion["true"], confusion["predicted"]
        shown = "".join(_thumbnail(path, thumbnails, report_folder, small=True) for path in examples.get(n, ()))
        rows.append(
            f'<div class="confusion" {_filter_attributes(true, predicted)}>'
            f'<div class="confusion-text"><div class="pair"><span class="true">{esc(_class_name(true))}</span>'
            f'<span class="arrow" aria-label="predicted as">→</span>'
            f'<span class="wrong">{esc(_class_name(predicted))}</span></div>'
            f'<div class="confusion-count">{_bar(confusion["count"] / largest, None, str(confusion["count"]))}'
            f'<span>{confusion["count"]:,} image{"" if confusion["count"] == 1 else "s"}</span></div></div>'
            f'<div class="examples">{shown}</div></div>')
    return (f'<section id="confusions"><h2>Most frequent confusions <span class="count">true → predicted, '
            f'top-1</span></h2><div class="confusions">{"".join(rows)}</div></section>')


def _card(entry, thumbnails, report_folder):
    true = entry["true"]
    accepted = set(entry.get("real_labels") or ()) | {true["index"]}
    predictions = []
    for rank, p in enumerate(entry["predictions"], start=1):
        percent = f"{100 * p['probability']:.1f}%"
        kind = "hit" if p["index"] in accepted else ("wrong" if rank == 1 else "")
        predictions.append(
            f'<li class="{kind}"><span class="plabel" title="{esc(_class_name(p))}">{esc(p["label"])}</span>'
            f'<span class="pvalue">{percent}</span>'
            f'{_bar(p["probability"], None, percent)}</li>')
    classes = [true] + [p for p in entry["predictions"][:1]]
    name = os.path.basename(entry["path"])
    return (f'<figure class="card" {_filter_attributes(*classes)}>'
            f'{_thumbnail(entry["path"], thumbnails, report_folder)}'
            f'<figcaption><div class="path" title="{esc(entry["path"])}">{esc(name)}</div>'
            f'<div class="truth">true: <b>{esc(_class_name(true))}</b></div>'
            f'<ol class="preds">{"".join(predictions)}</ol></figcaption></figure>')


def _misclassified_section(report, collector, grid, thumbnails, report_folder):
    total = collector.misclassified
    if report["images"]["evaluated"] == 0:
        note = "No image was evaluated."
    elif total == 0:
        note = "No top-1 mistakes."
    elif len(grid) < total:
        note = (f"The {len(grid):,} most confident of {total:,} misclassified images (top-1 probability, "
                f"highest first). --report-images sets how many; --misclassified-out lists them all.")
    else:
        note = "Most confident mistakes first."
    cards = "".join(_card(entry, thumbnails, report_folder) for entry in grid)
    return (f'<section id="misclassified"><h2>Misclassified images <span class="count">{total:,}</span></h2>'
            f'<p class="muted">{esc(note)}</p><div class="grid">{cards}</div></section>')


def _failed_section(report):
    failed = report.get("failed") or []
    count = report["images"]["failed"]
    if not failed:
        return ('<section id="unreadable"><h2>Images that could not be read <span class="count">0</span></h2>'
                '<p class="muted">Every image was read.</p></section>')
    rows = "".join(f'<tr><td class="mono">{esc(f["path"])}</td><td>{esc(f["error"])}</td></tr>'
                   for f in failed[:FAILED_SHOWN])
    more = (f'<p class="muted">and {count - FAILED_SHOWN:,} more (the --predictions-out file names them all)</p>'
            if count > FAILED_SHOWN else "")
    return (f'<section id="unreadable"><h2>Images that could not be read <span class="count">{count:,}</span></h2>'
            f'<p class="muted">Left out of every figure above, numerator and denominator.</p>'
            f'<div class="table-scroll"><table><thead><tr><th>image</th><th>reason</th></tr></thead>'
            f'<tbody>{rows}</tbody></table></div>{more}</section>')


def render_page(report, summary, collector, examples, grid, thumbnails, report_folder, version):
    """The whole page as a string. summary: summary.summary_parts, the terminal's own wording."""
    heading = summary[0]
    sections = [
        _summary_section(report, summary),
        _per_class_section(report),
        _confusions_section(report, examples, thumbnails, report_folder),
        _misclassified_section(report, collector, grid, thumbnails, report_folder),
        _failed_section(report),
    ]
    nav = "".join(f'<a href="#{anchor}">{text}</a>' for anchor, text in (
        ("summary", "Summary"), ("classes", "Classes"), ("confusions", "Confusions"),
        ("misclassified", "Misclassified"), ("unreadable", "Unreadable")))
    script_hash = base64.b64encode(hashlib.sha256(SCRIPT.encode("utf-8")).digest()).decode("ascii")
    policy = (f"default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'sha256-{script_hash}'; "
              "base-uri 'none'; form-action 'none'")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{policy}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<meta name="generator" content="resclassify {esc(version)}">
<title>{esc(heading)}</title>
<style>{STYLE}</style>
</head>
<body>
<header><div class="wrap"><h1>{esc(heading)}</h1>
<p class="muted">resclassify {esc(version)} eval report · {esc(report["model"].get("name") or "")}</p>
<nav>{nav}<label class="filter">Filter by class <input type="search" id="class-filter"
 placeholder="label, WordNet id or index" autocomplete="off"></label><span id="filter-count" class="muted"></span></nav>
</div></header>
<main class="wrap">
{"".join(sections)}
</main>
<script>{SCRIPT}</script>
</body>
</html>
"""



def write_html_report(path, report, collector, force=False):
    """Write the self-contained HTML report to path: thumbnails made now, the page written whole.

    collector is the ReportCollector that saw the run's records. The page goes to a
    temporary file beside path and is renamed into place, so an interrupted run leaves no half page;
    without force an existing file (even one that appeared meanwhile) is kept: FileExistsError.
    """
    from .. import __version__

    examples, grid = plan_thumbnails(report, collector)
    paths = [p for chosen in examples.values() for p in chosen] + [entry["path"] for entry in grid]
    thumbnails = make_thumbnails(paths)
    folder = os.path.dirname(os.path.abspath(path))
    page = render_page(report, summary_parts(report), collector, examples, grid, thumbnails, folder, __version__)
    write_page(path, page, force)


def write_page(path, page, force=False):
    """The page to path whole (files.write_atomically); without force an existing file stays: FileExistsError. A
    file name that is not UTF-8 shows as U+FFFD, so the page is valid UTF-8."""
    write_atomically(path, text_safe(page), replace=force)


STYLE = """
:root{--bg:#f4f5f8;--card:#fff;--ink:#1c2230;--muted:#687086;--line:#e3e6ee;--track:#e8ebf2;--accent:#3d6df2;
--hit:#1d8a4e;--wrong:#c63b3b;--thumb:#d9dde6;--mono:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
@media (prefers-color-scheme:dark){:root{--bg:#15181f;--card:#1d212b;--ink:#e4e7ee;--muted:#98a0b3;--line:#2d3340;
--track:#2c3240;--accent:#6f93ff;--hit:#4cc07f;--wrong:#ff7070;--thumb:#2a2f3b}}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--ink);font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,
"Helvetica Neue",Arial,sans-serif}
.wrap{max-width:1240px;margin:0 auto;padding:0 20px}
header{background:var(--card);border-bottom:1px solid var(--line);position:sticky;top:0;z-index:2;padding-top:14px}
header h1{font-size:19px;margin:0;overflow-wrap:anywhere}
header p{margin:2px 0 8px}
nav{display:flex;flex-wrap:wrap;gap:6px 14px;align-items:center;padding-bottom:12px}
nav a{color:var(--accent);text-decoration:none;font-weight:600}
nav a:hover{text-decoration:underline}
.filter{margin-left:auto;color:var(--muted)}
.filter input{margin-left:6px;padding:5px 9px;border:1px solid var(--line);border-radius:6px;min-width:230px;
background:var(--bg);color:var(--ink);font:inherit}
section{background:var(--card);border:1px solid var(--line);border-radius:10px;margin:18px 0;padding:16px 20px;
scroll-margin-top:120px}
h2{font-size:16px;margin:0 0 10px}
h2 .count{font-weight:400;color:var(--muted);font-size:14px;margin-left:6px}
.muted{color:var(--muted)}
.mono{font-family:var(--mono);font-size:12.5px;overflow-wrap:anywhere}
.tiles{display:flex;flex-wrap:wrap;gap:12px;margin-bottom:14px}
.tile{border:1px solid var(--line);border-radius:8px;padding:10px 16px;min-width:190px}
.tile-name{color:var(--muted);font-weight:600;text-transform:uppercase;font-size:12px;letter-spacing:.04em}
.tile-value{font-size:30px;font-weight:700;line-height:1.2;font-variant-numeric:tabular-nums}
.tile-detail{font-variant-numeric:tabular-nums}
.tile-detail span{color:var(--muted);display:inline-block;min-width:54px}
dl.fields{display:grid;grid-template-columns:max-content 1fr;gap:3px 16px;margin:0 0 8px}
dl.fields dt{color:var(--muted);font-weight:600}
dl.fields dd{margin:0;overflow-wrap:anywhere}
dl.fields dd.note{color:var(--muted)}
.table-scroll{max-height:560px;overflow:auto;border:1px solid var(--line);border-radius:8px}
table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums}
th,td{padding:5px 10px;border-bottom:1px solid var(--line);text-align:left;vertical-align:middle}
th{position:sticky;top:0;background:var(--card);font-weight:600;white-space:nowrap;z-index:1}
th[data-sort]{cursor:pointer;user-select:none}
th[data-sort]:hover{color:var(--accent)}
th[aria-sort=ascending]::after{content:" \\25B2";font-size:10px}
th[aria-sort=descending]::after{content:" \\25BC";font-size:10px}
.num{text-align:right}
td.acc{white-space:nowrap;min-width:230px}
td.acc .bar{width:110px;margin-right:8px}
.pct{display:inline-block;width:52px}
.frac{display:inline-block;min-width:60px;color:var(--muted)}
.idx{color:var(--muted);display:inline-block;min-width:30px;font-variant-numeric:tabular-nums}
.bar{display:inline-block;vertical-align:middle;height:8px;background:var(--track);border-radius:4px;overflow:hidden}
.bar>span{display:block;height:100%;background:var(--accent);border-radius:4px}
.confusions{display:grid;grid-template-columns:repeat(auto-fill,minmax(330px,1fr));gap:12px}
.confusion{border:1px solid var(--line);border-radius:8px;padding:10px 12px;display:flex;flex-direction:column;gap:8px}
.pair{font-weight:600;overflow-wrap:anywhere}
.pair .true{color:var(--hit)}.pair .wrong{color:var(--wrong)}
.arrow{margin:0 8px;color:var(--muted)}
.confusion-count{color:var(--muted);margin-top:4px}
.confusion-count .bar{width:120px;margin-right:8px}
.examples{display:flex;gap:8px;flex-wrap:wrap}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(200px,1fr));gap:14px}
.card{margin:0;border:1px solid var(--line);border-radius:8px;overflow:hidden;background:var(--card)}
.thumb{display:flex;align-items:center;justify-content:center;height:160px;background:var(--thumb)}
.thumb img{display:block;max-width:100%;max-height:160px}
.thumb.small{width:96px;height:96px;border-radius:6px;overflow:hidden}
.thumb.small img{max-width:96px;max-height:96px;width:auto;height:auto}
.thumb.missing{flex-direction:column;color:var(--muted);text-align:center;padding:8px;font-size:12px}
.thumb.missing small{overflow-wrap:anywhere;font-size:11px}
figcaption{padding:8px 10px 10px}
.path{font-family:var(--mono);font-size:12px;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
.truth{margin:2px 0 6px;overflow-wrap:anywhere}
.truth b{color:var(--hit)}
.preds{list-style:none;margin:0;padding:0}
.preds li{display:grid;grid-template-columns:1fr auto;column-gap:6px;font-size:12.5px;margin-bottom:3px}
.preds .plabel{white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
.preds .pvalue{font-variant-numeric:tabular-nums;color:var(--muted)}
.preds .bar{grid-column:1/3;height:5px;width:100%}
.preds li.wrong .plabel{color:var(--wrong);font-weight:600}.preds li.wrong .bar>span{background:var(--wrong)}
.preds li.hit .plabel{color:var(--hit);font-weight:600}.preds li.hit .bar>span{background:var(--hit)}
.hidden{display:none!important}
@media (max-width:700px){.filter{margin-left:0}}
"""

# Plain JavaScript, no library: sort the per-class table, filter every section by class. The page
# reads fine without it. It marks <html data-report-ready> when it has run (the browser test looks).
SCRIPT = """
(function () {
  "use strict";
  var root = document.documentElement;
  window.addEventListener("error", function (event) { root.setAttribute("data-report-error", String(event.message)); });
  document.addEventListener("securitypolicyviolation", function (event) {
    root.setAttribute("data-report-blocked", String(event.blockedURI));
  });
  function cellValue(row, column, numeric) {
    var cell = row.cells[column];
    var value = cell.hasAttribute("data-value") ? cell.getAttribute("data-value") : cell.textContent;
    return numeric ? parseFloat(value) : value.toLowerCase();
  }
  Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), function (table) {
    var headers = table.tHead.rows[0].cells;
    Array.prototype.forEach.call(headers, function (header, column) {
      if (!header.hasAttribute("data-sort")) { return; }
      header.setAttribute("tabindex", "0");
      function sortBy() {
        var numeric = header.getAttribute("data-sort") === "number";
        var ascending = header.getAttribute("aria-sort") !== "ascending";
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows).map(function (row, n) { return [row, n]; });
        rows.sort(function (a, b) {
          var x = cellValue(a[0], column, numeric), y = cellValue(b[0], column, numeric);
          if (x < y) { return ascending ? -1 : 1; }
          if (x > y) { return ascending ? 1 : -1; }
          return a[1] - b[1];
        });
        rows.forEach(function (pair) { body.appendChild(pair[0]); });
        Array.prototype.forEach.call(headers, function (other) { other.removeAttribute("aria-sort"); });
        header.setAttribute("aria-sort", ascending ? "ascending" : "descending");
      }
      header.addEventListener("click", sortBy);
      header.addEventListener("keydown", function (event) {
        if (event.key === "Enter" || event.key === " ") { event.preventDefault(); sortBy(); }
      });
    });
  });
  var input = document.getElementById("class-filter");
  var counter = document.getElementById("filter-count");
  var filtered = document.querySelectorAll("[data-classes]");
  function applyFilter() {
    var query = input.value.trim().toLowerCase();
    var byIndex = /^[0-9]+$/.test(query);
    var shown = 0;
    Array.prototype.forEach.call(filtered, function (element) {
      var match = query === "" || (byIndex
        ? element.getAttribute("data-classes").split(" ").indexOf(query) >= 0
        : element.getAttribute("data-text").indexOf(query) >= 0);
      element.classList.toggle("hidden", !match);
      if (match) { shown += 1; }
    });
    counter.textContent = query === "" ? "" : shown + " of " + filtered.length + " rows and images match";
  }
  input.addEventListener("input", applyFilter);
  applyFilter();
  root.setAttribute("data-report-ready", "yes");
})();
"""
