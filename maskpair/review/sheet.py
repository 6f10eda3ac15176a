"""The review as a picture, for an executed notebook to read as a report: the pairs that most need a look (the top
of the label-issue ranking, the pairs the audit flags, the pairs a reviewer marked `problem`), each with its labels'
outlines and a caption saying why, drawn by the audit's contact-sheet grid (`audit.sheet.draw_sheet`)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from maskpair.audit.sheet import draw_sheet

TOP_RANKED = 12   # pairs taken from the top of a label-issue ranking
MAX_TILES = 24    # pairs drawn at most (the rest are counted in the text): the picture stays quick to draw and small
CAPTION_LINES = 3  # what the sheet's caption band holds


@dataclass(frozen=True)
class ReviewSheet:
    """The picture written: its path, the names drawn in order (row by row), each one's caption lines, how many
    pairs needing a look were left out (over MAX_TILES), and a sentence saying what the picture shows."""

    path: Path
    names: list[str]
    captions: list[list[str]]
    left_out: int
    text: str


def needs_a_look(flags, verdicts, issues=None, top: int = TOP_RANKED) -> list[tuple[str, list[str]]]:
    """(name, caption lines) of the pairs to look at first, each once, in this order: the `top` best ranked of a
    label-issue ranking, then every pair the audit flags, then every pair a reviewer marked `problem`.

    flags: {name: [flags]} (None: no audit report); verdicts: {name: its latest log line}; issues: {name:
    label-issue entry with "rank" and "kind"}. Captions: the name (and its verdict, if any), "rank R: kind",
    then the flags (one a line, the last line counting those that do not fit).
    """
    flags, issues = flags or {}, issues or {}
    ranked = sorted((entry["rank"], name) for name, entry in issues.items() if entry.get("rank") is not None)
    chosen = [name for _, name in ranked[:top]]
    chosen += [name for name, found in flags.items() if found]
    chosen += [name for name, line in verdicts.items() if line["verdict"] == "problem"]
    tiles = []
    for name in dict.fromkeys(chosen):
        verdict = (verdicts.get(name) or {}).get("verdict")
        lines = [f"{name} · {verdict}" if verdict else name]
        issue = issues.get(name) or {}
        if issue.get("rank") is not None:
            lines.append(f"rank {issue['rank']}" + (f": {issue['kind']}" if issue.get("kind") else ""))
        found, room = list(flags.get(name, ())), CAPTION_LINES - len(lines)
        if len(found) > room:
            found = found[:room - 1] + [f"+{len(found) - room + 1} more flags"]
        tiles.append((name, lines + found))
    return tiles


def review_sheet(session, path, top: int = TOP_RANKED, max_tiles: int = MAX_TILES, columns: int = 6,
                 thumb: int = 160) -> ReviewSheet:
    """Draw what most needs a look in a review session (`needs_a_look` of its flags, verdicts and label issues)
    as a PNG at `path`; when nothing does, a small picture saying so. Returns what was drawn and a sentence."""
    with session.lock:
        flags, verdicts, issues = session.flags, dict(session.verdicts), session.issues
        audit_state = session.audit_status()
        running = session.audit is not None and session.report is None and session.audit_failure is None
        progress = session.audit_progress
    tiles = needs_a_look(flags, verdicts, issues, top)
    shown, left_out = tiles[:max_tiles], max(0, len(tiles) - max_tiles)
    names, captions = [name for name, _ in shown], [lines for _, lines in shown]

    ranked = min(top, sum(1 for entry in issues.values() if entry.get("rank") is not None))
    flagged = sum(1 for found in (flags or {}).values() if found)
    problems = sum(1 for line in verdicts.values() if line["verdict"] == "problem")
    sources = [f"the top {ranked} of the label-issue ranking (caption: rank and kind)"] if ranked else []
    if flags is not None:
        sources.append(f"the {flagged} pair(s) the audit flags (caption: their flags)")
    else:
        done = "{:,} / {:,} pairs done".format(*progress) if progress else "starting"
        sources.append(f"no audit flags yet (the audit was still running when this was drawn: {done})" if running
                       else f"no audit flags ({audit_state})")
    sources.append(f"the {problems} pair(s) a reviewer marked problem")
    text = f"{len(tiles)} pair(s) need a look: {'; '.join(sources)}."
    if shown:
        text += " Each tile: the image with its labels' outlines in the class colours."
    if left_out:
        text += f" The first {len(shown)} are drawn, {left_out} left out."

    if shown:
        marked = [bool((flags or {}).get(name)) or (verdicts.get(name) or {}).get("verdict") == "problem"
                  for name in names]
        path = draw_sheet(session.data, names, captions, path, columns, thumb, marked)
    else:
        path = _nothing_to_show(path, text)
    return ReviewSheet(Path(path), names, captions, left_out, text)


def _nothing_to_show(path, text: str) -> Path:
    """A small white PNG stating `text` (an executed notebook shows that nothing needed a look, not nothing)."""
    import textwrap

    from PIL import Image, ImageDraw

    picture = Image.new("RGB", (480, 60), "white")
    ImageDraw.Draw(picture).multiline_text((8, 8), "\n".join(textwrap.wrap(text, 78)), fill=(0, 0, 0), spacing=2)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    picture.save(path)
    return path
