"""``edgeguard msp``: the MSP's keys, root metadata and signed site bundles.

    edgeguard msp init       --keys DIR --publish DIR
    edgeguard msp sign       --keys DIR --publish DIR --site SITE --policy FILE -m MESSAGE
    edgeguard msp rotate-key --keys DIR --publish DIR [--role bundle|root] [--revoke KEYID]

The key directory holds ``<role>-<keyid>.pem`` files (0600) and ``current.json`` naming the
key of each role that signs from now on; older keys stay until revoked, so bundles they
signed stay valid while appliances catch up. The publish directory is the static layout of
``publish.py``; copy or sync it to any web server. The fleet server's commands
(``msp serve|add-appliance|revoke-appliance|list|site``) live in ``webui.fleet``.

Exit codes: 0 done, 1 refused (invalid policy, nothing signed), 2 usage or environment error.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from appliance.atomic import write_atomic
from appliance.sync.bundle import assemble_policy
from appliance.sync.errors import BundleRefused, SyncError
from appliance.sync.keys import SigningKey, generate_key
from appliance.sync.metadata import (
    SECTION_PATTERN,
    Root,
    load_root,
    make_bundle,
    make_root,
    valid_site,
    verify_bundle,
)
from appliance.sync.publish import latest_root, publish, publish_root, published_bundle
from policies.errors import PolicyLoadError, PolicyValidationError

if TYPE_CHECKING:
    from appliance.cli import SubCommands

EXIT_OK, EXIT_REFUSED, EXIT_USAGE = 0, 1, 2
Clock = Callable[[], dt.datetime]


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


class KeyDir:
    """The MSP's private keys by key id, and which one of each role signs now."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def add(self, role: str, key: SigningKey) -> None:
        key.save(self.path / f"{role}-{key.keyid}.pem")

    def get(self, keyid: str) -> SigningKey:
        matches = list(self.path.glob(f"*-{keyid}.pem"))
        if not matches:
            raise SyncError(f"{self.path}: no private key with id {keyid[:16]}...")
        return SigningKey.load(matches[0])

    def current(self) -> dict[str, str]:
        try:
            data = json.loads((self.path / "current.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise SyncError(
                f"{self.path}: no current.json ({exc}); is this a key directory made by "
                "`edgeguard msp init`?"
            ) from exc
        return {str(k): str(v) for k, v in data.items()}

    def set_current(self, **roles: str) -> None:
        merged = {**(self.current() if (self.path / "current.json").exists() else {}), **roles}
        write_atomic(self.path / "current.json", json.dumps(merged, indent=2) + "\n", mode=0o600)


def _trusted_root(publish_dir: Path) -> Root:
    envelope = latest_root(publish_dir)
    if envelope is None:
        raise SyncError(f"{publish_dir}: no root published; run `edgeguard msp init` first")
    try:
        return load_root(envelope)
    except BundleRefused as exc:
        raise SyncError(f"{publish_dir}: the latest root is unusable: {exc}") from exc


def cmd_init(args: argparse.Namespace, now: Clock = _utc_now) -> int:
    keys = KeyDir(args.keys)
    if keys.path.exists() and any(keys.path.glob("*.pem")):
        print(f"{keys.path}: already holds keys; refusing to replace them", file=sys.stderr)
        return EXIT_USAGE
    if latest_root(args.publish) is not None:
        print(f"{args.publish}: a root is already published", file=sys.stderr)
        return EXIT_USAGE
    root_key, bundle_key = generate_key(), generate_key()
    keys.path.mkdir(parents=True, exist_ok=True, mode=0o700)
    keys.add("root", root_key)
    keys.add("bundle", bundle_key)
    keys.set_current(root=root_key.keyid, bundle=bundle_key.keyid)
    expires = now() + dt.timedelta(days=args.expires_in)
    envelope = make_root(
        1, [root_key, bundle_key], [root_key], [bundle_key], [], expires, [root_key]
    )
    publish_root(args.publish, envelope)
    print(f"root key   {root_key.keyid}")
    print(f"bundle key {bundle_key.keyid}")
    print(f"published {args.publish}/root/1.json (expires {expires:%Y-%m-%d});")
    print("enrol appliances with that file, or pin the root key id above with --root-keyid")
    return EXIT_OK


def cmd_sign(args: argparse.Namespace, now: Clock = _utc_now) -> int:
    if not valid_site(args.site):
        print(f"--site {args.site!r}: use letters, digits, '.', '_', '-'", file=sys.stderr)
        return EXIT_USAGE
    if bad := [s for s in args.lock if not SECTION_PATTERN.fullmatch(s)]:
        print(f"--lock {bad}: expected top-level policy section names", file=sys.stderr)
        return EXIT_USAGE
    try:
        assembled = assemble_policy(args.policy, args.baseline)
    except PolicyValidationError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"{args.policy}: invalid policy; nothing was signed", file=sys.stderr)
        return EXIT_REFUSED
    except PolicyLoadError as exc:
        print(f"{exc}\n{args.policy}: nothing was signed", file=sys.stderr)
        return EXIT_REFUSED
    root = _trusted_root(args.publish)
    signer = KeyDir(args.keys).get(KeyDir(args.keys).current()["bundle"])
    if signer.keyid not in root.bundle_keys:
        why = f"is not a bundle key of root v{root.version}; run `edgeguard msp rotate-key`"
        print(f"bundle key {signer.keyid[:16]}... {why}", file=sys.stderr)
        return EXIT_USAGE
    previous = published_bundle(args.publish, args.site)
    last = previous["signed"]["version"] if previous else 0
    version = args.version if args.version is not None else last + 1
    if version <= last:
        why = "appliances refuse versions that do not go up"
        print(f"--version {version}: site {args.site} is at v{last}; {why}", file=sys.stderr)
        return EXIT_USAGE
    at = now()
    envelope, blobs = make_bundle(
        args.site, version, assembled.text, assembled.files, args.lock,
        at + dt.timedelta(days=args.expires_in), signer, parsed=assembled.parsed,
        baseline=assembled.baseline, message=args.message, created=at,
    )  # fmt: skip
    # What appliances will do, before anything is published.
    verify_bundle(root, envelope, site=args.site, last_version=last or None, now=at)
    publish(args.publish, envelope, blobs)
    missing = sorted(set(args.lock) - set(_sections(assembled.text)))
    print(
        f"site {args.site}: bundle v{version} published ({len(assembled.files)} file(s), "
        f"locked: {', '.join(sorted(set(args.lock))) or 'nothing'}, "
        f"expires {at + dt.timedelta(days=args.expires_in):%Y-%m-%d})"
    )
    if missing:
        print(f"note: locked sections not in the policy: {', '.join(missing)}")
    return EXIT_OK


def _sections(text: str) -> list[str]:
    data: Any = yaml.safe_load(text)
    return list(data) if isinstance(data, dict) else []


def cmd_rotate_key(args: argparse.Namespace, now: Clock = _utc_now) -> int:
    keys = KeyDir(args.keys)
    old = _trusted_root(args.publish)
    new_key = generate_key()
    root_keys, bundle_keys = set(old.root_keys), set(old.bundle_keys)
    signers = [keys.get(k) for k in sorted(old.root_keys)]
    if args.role == "root":
        root_keys = {new_key.keyid}
        signers.append(new_key)
    else:
        bundle_keys.add(new_key.keyid)
    revoked = set(old.revoked)
    if args.revoke:
        if args.revoke not in old.keys:
            why = f"not a key of root v{old.version}"
            print(f"--revoke {args.revoke[:16]}...: {why}", file=sys.stderr)
            return EXIT_USAGE
        revoked.add(args.revoke)
        root_keys.discard(args.revoke)
        bundle_keys.discard(args.revoke)
    listed = {k: v for k, v in old.keys.items() if k in root_keys | bundle_keys}
    listed[new_key.keyid] = new_key.public_raw
    expires = now() + dt.timedelta(days=args.expires_in)
    try:
        envelope = make_root(
            old.version + 1, listed, root_keys, bundle_keys, revoked, expires, signers
        )
    except ValueError as exc:
        print(f"cannot rotate: {exc}", file=sys.stderr)
        return EXIT_USAGE
    keys.add(args.role, new_key)
    publish_root(args.publish, envelope)
    keys.set_current(**{args.role: new_key.keyid})
    print(f"root v{old.version + 1} published: new {args.role} key {new_key.keyid}")
    if args.revoke:
        stale = _sites_signed_by(args.publish, args.revoke)
        print(f"revoked {args.revoke}")
        for site in stale:
            why = "appliances refuse it until it is signed again (`edgeguard msp sign`)"
            print(f"site {site}: the published bundle is signed by the revoked key; {why}")
    return EXIT_OK


def _sites_signed_by(publish_dir: Path, keyid: str) -> list[str]:
    sites = []
    for path in sorted((Path(publish_dir) / "sites").glob("*/bundle.json")):
        envelope = published_bundle(publish_dir, path.parent.name)
        if envelope and any(s.get("keyid") == keyid for s in envelope.get("signatures", [])):
            sites.append(path.parent.name)
    return sites


def _run(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except SyncError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USAGE

    return run


_GROUP_ATTR = "edgeguard_msp_commands"


def msp_subcommands(sub: SubCommands) -> SubCommands:
    """The ``edgeguard msp`` group, made on first use: the signing side (here) and the fleet
    server (``webui.fleet``, a package above this one) both add their commands to it."""
    parser = sub.choices.get("msp")
    if parser is None:
        parser = sub.add_parser(
            "msp", help="the MSP side: signing keys, site bundles, the fleet server"
        )
        group = parser.add_subparsers(dest="msp_command", required=True, metavar="COMMAND")
        setattr(parser, _GROUP_ATTR, group)
    found: SubCommands = getattr(parser, _GROUP_ATTR)
    return found


def add_msp_commands(sub: SubCommands) -> None:
    msub = msp_subcommands(sub)

    def command(name: str, help_: str) -> argparse.ArgumentParser:
        p = msub.add_parser(name, help=help_, description=help_)
        p.add_argument("--keys", type=Path, required=True, help="the MSP's private key directory")
        p.add_argument("--publish", type=Path, required=True, help="the static publish directory")
        return p

    p = command("init", "make the root and bundle keys and publish root v1")
    p.add_argument("--expires-in", type=int, default=365, metavar="DAYS", help="root expiry")
    p.set_defaults(func=_run(cmd_init))

    p = command("sign", "validate, sign and publish a site's policy bundle")
    p.add_argument("--site", required=True, help="the site id appliances were enrolled with")
    p.add_argument("--policy", type=Path, required=True, help="the site's policy YAML")
    p.add_argument("--baseline", type=Path, help="a YAML whose sections the policy overrides")
    p.add_argument("--version", type=int, help="bundle version (default: last published + 1)")
    p.add_argument("--expires-in", type=int, default=30, metavar="DAYS", help="default 30")
    p.add_argument(
        "--lock",
        nargs="+",
        default=[],
        metavar="SECTION",
        help="top-level sections local admins may not change",
    )
    p.add_argument("-m", "--message", required=True, help="what changed and why")
    p.set_defaults(func=_run(cmd_sign))

    p = command("rotate-key", "publish a new root with a new key (and optionally a revocation)")
    p.add_argument("--role", choices=["bundle", "root"], default="bundle")
    p.add_argument("--revoke", metavar="KEYID", help="a key id to revoke")
    p.add_argument("--expires-in", type=int, default=365, metavar="DAYS", help="root expiry")
    p.set_defaults(func=_run(cmd_rotate_key))
