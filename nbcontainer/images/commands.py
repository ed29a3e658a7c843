"""The image subcommands of the CLI: images, history, import, save, rmi.

``add_commands(subparsers)`` registers them on the lead's argparse tree; each handler takes the
parsed args and returns an exit status. Failures are nbcontainer errors, which the CLI prints as
one line (exit 125), so no handler prints a traceback or calls ``sys.exit``.
"""

from __future__ import annotations

import argparse
import calendar
import sys
import time
from collections import Counter
from typing import Any

from nbcontainer.images.builtin import stored_record
from nbcontainer.images.oci import import_image, save_image
from nbcontainer.images.store import ImageStore


def human_size(n: int) -> str:
    """Docker-style decimal sizes: 12B, 4.2kB, 1.4MB."""
    size = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f}{unit}" if unit == "B" else f"{size:.3g}{unit}"
        size /= 1000
    return f"{n}B"


def human_age(created: str, now: float | None = None) -> str:
    """"3 minutes ago" from an RFC 3339 timestamp; "" when unknown."""
    try:
        then = calendar.timegm(time.strptime(created[:19], "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return ""
    secs = max(0, int((now or time.time()) - then))
    for unit, length in (("year", 31536000), ("month", 2592000), ("day", 86400),
                         ("hour", 3600), ("minute", 60)):
        if secs >= length:
            k = secs // length
            return f"{k} {unit}{'s' if k > 1 else ''} ago"
    return f"{secs} seconds ago"


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in rows)


def cmd_images(args: argparse.Namespace) -> int:
    """List stored images with total, shared and unique layer sizes."""
    store = ImageStore(getattr(args, "root", None))
    records = store.list_images()
    users = Counter(d for r in records for d in set(r.layers))
    rows = [["REPOSITORY", "TAG", "DIGEST", "IMAGE ID", "LAYERS", "SIZE", "SHARED", "UNIQUE",
             "CREATED"]]
    for r in records:
        sizes = {d: store.layer_meta(d).size for d in set(r.layers)}
        shared = sum(s for d, s in sizes.items() if users[d] > 1)
        total = sum(sizes.values())
        digest = r.digest if args.digests else r.digest[:19]
        rows.append([r.name, r.tag or "<none>", digest or "<none>",
                     r.id.removeprefix("sha256:")[:12], str(len(r.layers)),
                     human_size(total), human_size(shared), human_size(total - shared),
                     human_age(r.created)])
    print(_table(rows))
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    """Show an image's steps, newest first, like `docker history`."""
    store = ImageStore(getattr(args, "root", None))
    record = stored_record(args.image, store)
    rows = [["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"]]
    for i, h in enumerate(reversed(record.history)):
        by = h.created_by if args.no_trunc or len(h.created_by) <= 60 else h.created_by[:57] + "..."
        ident = record.id.removeprefix("sha256:")[:12] if i == 0 else "<missing>"
        rows.append([ident, human_age(h.created), by, human_size(h.size), h.comment])
    print(_table(rows))
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    """Import an archive into the store and print the new image's id.

    Without NAME the archive's own name is used; it is said on stderr (stdout stays the id,
    for scripts).
    """
    from nbcontainer import progress as progress_mod

    with progress_mod.default(f"importing {args.tarball}") as progress:
        record = import_image(args.tarball, args.name, getattr(args, "root", None),
                              progress=progress)
    if args.name is None:
        print(f"Loaded image: {record.ref}", file=sys.stderr)
    print(record.id)
    return 0


def cmd_save(args: argparse.Namespace) -> int:
    """Write an image as an OCI image-layout tarball."""
    save_image(args.image, args.output, getattr(args, "root", None), compress=not args.no_gzip)
    return 0


def cmd_rmi(args: argparse.Namespace) -> int:
    """Remove images; print what was untagged and which layers were deleted."""
    store = ImageStore(getattr(args, "root", None))
    for ref in args.images:
        untagged, removed = store.remove(ref, force=args.force)
        for name in untagged:
            print(f"Untagged: {name}")
        for diff_id in removed:
            print(f"Deleted: {diff_id}")
    return 0


def add_commands(subparsers: Any) -> None:
    """Register images, history, import, save and rmi on argparse subparsers."""
    p = subparsers.add_parser("images", help="list stored images, with shared vs unique size")
    p.add_argument("--digests", action="store_true", help="show manifest digests in full")
    p.set_defaults(func=cmd_images)

    p = subparsers.add_parser("history", help="show the layers and steps of an image")
    p.add_argument("image")
    p.add_argument("--no-trunc", action="store_true", help="do not shorten CREATED BY")
    p.set_defaults(func=cmd_history)

    p = subparsers.add_parser(
        "import", help="import a docker-save tarball or an OCI image layout (dir or tarball)")
    p.add_argument("tarball", metavar="TARBALL",
                   help="docker-save tarball, OCI image-layout directory or tarball")
    p.add_argument("name", nargs="?", metavar="NAME",
                   help="NAME[:TAG] to store it as; default: the name the archive gives "
                        "(`save`'s, containerd's io.containerd.image.name, a full reference in "
                        "org.opencontainers.image.ref.name, or docker-save's single RepoTags "
                        "entry)")
    p.set_defaults(func=cmd_import)

    p = subparsers.add_parser(
        "save", help="write an image as an OCI image-layout tarball (with its name, and a "
                     "pulled image's reference and digest, for `import`)")
    p.add_argument("image")
    p.add_argument("-o", "--output", required=True, help="path of the tarball to write")
    p.add_argument("--no-gzip", action="store_true", help="store layers uncompressed")
    p.set_defaults(func=cmd_save)

    p = subparsers.add_parser("rmi", help="remove images (layers go when nothing uses them)")
    p.add_argument("images", nargs="+", metavar="IMAGE",
                   help="NAME[:TAG], NAME@sha256:DIGEST, or sha256:ID|DIGEST")
    p.add_argument("-f", "--force", action="store_true",
                   help="an id or digest naming several images removes them all")
    p.set_defaults(func=cmd_rmi)
