"""`check` (read and validate every pair of a folder; the description it used on stdout) and `fetch` (the
example data, sha256-checked)."""
from __future__ import annotations

import sys
from pathlib import Path

from maskpair.data.check import check_dataset, format_summary
from maskpair.data.description import DESCRIPTION_FILE
from maskpair.data.fetch import EXAMPLE_DATA_DIR, example_registry, fetch_example_data
from maskpair.data.proposal import proposal_text, propose_description
from maskpair.errors import DataError


def add_commands(commands) -> None:
    check = commands.add_parser(
        "check", help="read and validate every pair: a summary (stderr) and the dataset description as JSON "
                      "(stdout), or one line per problem (stderr, exit 1)",
        description="Read and validate every pair of DATA_DIR. stdout holds only the description used, as JSON: "
                    f"redirect it to DATA_DIR/{DESCRIPTION_FILE} and edit the names. When the folder does not read "
                    "as described but another description reads it (name templates, lossy or colour masks), "
                    "stdout holds that one and the exit status is still 1.")
    check.add_argument("data_dir", type=Path, help="the dataset folder")
    check.set_defaults(run=check_command, command_parser=check)
    fetch = commands.add_parser("fetch", help="download the example spine-MRI data (sha256-checked) and write its "
                                              "dataset.json")
    fetch.add_argument("dest", nargs="?", type=Path, default=EXAMPLE_DATA_DIR, help="where to put it")
    fetch.add_argument("--url", default=None, help="base URL (default: $SPINE_DATA_URL, else the pinned commit)")
    fetch.set_defaults(run=fetch_command, command_parser=fetch)


def check_command(args) -> int:
    description, summary, problems = check_dataset(args.data_dir)
    if problems:
        print("\n".join(problems), file=sys.stderr)
        print(f"{args.data_dir}: {len(problems)} problem(s)", file=sys.stderr)
        proposal = propose_description(args.data_dir)
        if proposal is not None:  # the folder as described does not read (exit 1), but this description does
            print("\n".join(proposal_text(*proposal)), file=sys.stderr)
            print(proposal[0].to_json())
        return 1
    # stdout holds only the description, so it can be redirected to a file, edited and saved as dataset.json
    print(format_summary(args.data_dir, summary), file=sys.stderr)
    print(f"description ({description.source}), on stdout to save as {DESCRIPTION_FILE} and edit:", file=sys.stderr)
    print(description.to_json())
    return 0


def fetch_command(args) -> int:
    try:
        dest = fetch_example_data(args.dest, args.url)
    except DataError as err:
        print(err, file=sys.stderr)
        return 1
    print(f"{dest}: {len(example_registry())} files present and verified, and {DESCRIPTION_FILE}")
    return 0
