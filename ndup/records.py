"""Frozen records that flow one way through the pipeline: walk -> decode -> match -> group -> plan."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Tier = Literal["exact", "copy", "similar"]
Action = Literal["keep", "delete", "review"]
TIERS: tuple[Tier, ...] = ("exact", "copy", "similar")


@dataclass(frozen=True, slots=True)
class FileEntry:
    """A regular file found by the walk (stat only, nothing read)."""

    path: str  # absolute
    size: int
    mtime_ns: int
    dev: int
    inode: int


@dataclass(frozen=True, slots=True)
class ImageFacts:
    """What decoding a file tells us about it; cached per (path, size, mtime_ns)."""

    content_hash: str  # sha256 of the bytes
    format: str  # Pillow's format name: JPEG, PNG, WEBP, ...
    width: int  # as displayed, after EXIF orientation
    height: int
    phash: str  # 64-bit perceptual hashes as 16 hex digits
    dhash: str
    quality: int | None = None  # estimated JPEG quality (1-100); None when not a JPEG
    lossless: bool = False
    exif_tags: int = 0  # how much EXIF the file carries; richer metadata suggests an original
    subtype: str | None = None  # the RAW flavour when format is RAW: DNG, CR2, CR3, NEF, ARW, RAF, ...
    # When the picture was taken, as the camera's clock said: ISO 8601 "2023-07-14T10:22:05.120+02:00",
    # with fractions of a second and the UTC offset only when the file records them.
    capture_time: str | None = None
    camera_make: str | None = None
    camera_model: str | None = None
    lens: str | None = None
    has_gps: bool = False
    rating: int | None = None  # 0-5 stars from EXIF or XMP; None when the file carries none
    sharpness: float | None = None  # variance of the Laplacian of the grey image, 256 px on the short side
    clipped: float | None = None  # fraction of pixels blown out or crushed to black (0-1): exposure

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @property
    def camera(self) -> str | None:
        """Make and model, e.g. "Apple iPhone 13"; None when the file does not say."""
        make, model = (self.camera_make or "").strip(), (self.camera_model or "").strip()
        if model.lower().startswith(make.lower()):
            make = ""  # many models repeat the make: "Canon" + "Canon EOS R5"
        return " ".join(x for x in (make, model) if x) or None


@dataclass(frozen=True, slots=True)
class Failure:
    """A file that could not be used, and why (shown to the user, cached until the file changes)."""

    path: str
    reason: str


@dataclass(frozen=True, slots=True)
class Decoded:
    """An image file read once: its facts (cached) and pixels for the model (never cached)."""

    path: str
    size: int  # as read, which may differ from the walk's stat if the file changed in between
    mtime_ns: int
    facts: ImageFacts
    pixels: Any  # numpy (side, side, 3) uint8, EXIF-oriented
    grey: Any = None  # numpy (h, w) uint8: the registration picture, when asked for and alike (ndup.decode)


@dataclass(frozen=True, slots=True)
class NotAnImage:
    """Neither an image by content nor by name: ignored, and remembered so it is not read again."""

    path: str
    size: int
    mtime_ns: int


Outcome = Decoded | NotAnImage | Failure


@dataclass(frozen=True, slots=True)
class ImageRecord:
    """One usable image of the library as matching and planning see it."""

    path: str
    size: int
    mtime_ns: int
    facts: ImageFacts


@dataclass(frozen=True, slots=True)
class PairVerdict:
    """A verified candidate pair: indices into the image list, the tier it supports and its score."""

    a: int
    b: int
    tier: Tier | None  # None: looked at, not a match
    score: float  # probability that the two are copies of one picture
    similarity: float = 0.0  # embedding cosine, kept for explanations


@dataclass(frozen=True, slots=True)
class Member:
    path: str
    action: Action
    score: float  # match score against the keeper (1.0 for the keeper itself)
    reason: str
    size: int = 0
    width: int = 0
    height: int = 0
    format: str = ""


@dataclass(frozen=True, slots=True)
class Group:
    id: int
    tier: Tier
    keep: str
    members: tuple[Member, ...]


@dataclass(frozen=True, slots=True)
class Plan:
    run_id: int
    groups: tuple[Group, ...]
    failures: tuple[Failure, ...]
    summary: dict = field(default_factory=dict)


# ---- review decisions and the apply journal (ndup review / apply / undo) -------------------------

GroupStatus = Literal["open", "accepted", "not_duplicates"]
JournalAction = Literal["trash", "move", "hardlink", "symlink", "delete"]
# planned -> done | skipped | failed | cancelled (interrupted before the file was touched);
# done -> undoing -> undone (or back to done with a reason when undo could not restore it)
JournalState = Literal["planned", "done", "skipped", "failed", "cancelled", "undoing", "undone"]


@dataclass(frozen=True, slots=True)
class GroupDecision:
    """What a person decided about a group in `ndup review`; keyed by the group's signature."""

    status: GroupStatus = "open"
    keep: str | None = None  # a keeper chosen by hand; None: the plan's
    actions: dict[str, str] = field(default_factory=dict)  # path -> keep | delete, set by hand


@dataclass(frozen=True, slots=True)
class JournalEntry:
    apply_id: int
    seq: int
    group_id: int
    action: JournalAction
    src: str  # the duplicate acted on, at its original path
    dest: str | None  # where it went (trash, --move-to), or the keeper a link points at
    keeper: str
    temp: str | None  # a temporary name the action may leave behind if interrupted
    content_hash: str  # of src at the scan, checked before acting and after undoing
    size: int
    mtime_ns: int
    mode: int
    state: JournalState
    reason: str = ""
    extra: str | None = None  # action-specific: the .trashinfo file of a trashed file


@dataclass(frozen=True, slots=True)
class ApplyRun:
    id: int
    plan_run_id: int
    action: str
    options: dict
    status: str  # running | done | interrupted | undone
    started_at: float
    finished_at: float | None
    summary: dict = field(default_factory=dict)
