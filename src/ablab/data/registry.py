"""Named corpora: which files make each one, how it is split and read, and where each file comes from.

Two kinds of origin:
- A Hugging Face Hub dataset pinned by commit (`repo`, `revision`): the file's name is its path in the
  repository. We state no checksum we have not seen published: `sha256` and `size` are None, and a
  download is checked against what the Hub states for the file at that commit (the LFS sha256 in
  X-Linked-Etag, the size in X-Linked-Size); the sha256 actually obtained is recorded.
- A plain URL pinned by commit (GitHub): every checksum is the sha256 that the corpus's SOURCE.md (in the
  shared data folder) states for the file as stored there, and the origin's bytes are that file (or, for
  one Gutenberg book, bytes SOURCE.md states together with the re-encoding that turns them into it).
  Files SOURCE.md describes as edited or reconstructed have no origin: they can come only from
  `ABLAB_DATA` or from a mirror (`ABLAB_MIRROR`) that serves the shared data folder's layout.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ablab.errors import DataError

GITHUB_RAW = "https://raw.githubusercontent.com"
HUB = "huggingface.co"


@dataclass(frozen=True)
class RemoteFile:
    name: str  # path inside the corpus folder (for a Hub file: its path in the repository)
    sha256: str | None  # of the file as used; None = checked against the Hub's stated LFS sha256 instead
    url: str | None = None  # pinned plain-URL origin; None = a Hub file, or only ABLAB_DATA / ABLAB_MIRROR
    url_sha256: str | None = None  # of the origin's bytes, when they differ from the file as used
    url_encoding: str | None = None  # the origin's text encoding, re-encoded to UTF-8 after download
    repo: str | None = None  # Hub repository id, e.g. "roneneldan/TinyStories"
    revision: str | None = None  # Hub commit (or branch, whose commit obtained is then recorded)
    size: int | None = None  # bytes, where stated; None = checked against the Hub's X-Linked-Size
    repo_type: str = "dataset"  # "dataset" or "model"


@dataclass(frozen=True)
class CorpusSpec:
    name: str  # the name a config uses, e.g. "tinystories"
    folder: str  # folder under ABLAB_DATA (and under the mirror and the cache)
    train: tuple[RemoteFile, ...]  # one text, or one document per file when `documents` is set
    val: tuple[RemoteFile, ...] = ()  # the corpus's own validation split; empty = hold out val_fraction
    split_note: str = ""  # how the own split was made, recorded in the prepared data's meta
    documents: bool = False  # each train file is a separate document (split by content hash)
    gutenberg: bool = False  # strip the Project Gutenberg header and footer from each file
    bundled: str | None = None  # a copy shipped inside the package (ablab/data/corpora/)
    license: str = ""  # the data's license, as its source states it
    about: str = ""  # one line: what the corpus is
    origin: str = ""  # where it comes from, for people, e.g. "huggingface.co/datasets/roneneldan/TinyStories @ f54c09f"
    size_bytes: int | None = None  # total of its files where stated or measured; None = as the Hub reports
    fmt: str = "txt"  # "txt" | "parquet" | "jsonl": how each file is read
    text_column: str = "text"  # the text of a parquet or jsonl row
    document_separator: str | None = None  # a .txt file holds documents between these markers
    shards: int = 0  # shard files available (0 = not sharded); train is the first default_shards of them
    default_shards: int = 0
    shard_files: tuple[RemoteFile, ...] = ()  # every shard, in order

    @property
    def files(self) -> tuple[RemoteFile, ...]:
        return self.train + self.val

    def with_shards(self, n: int) -> CorpusSpec:
        """This corpus trained on its first `n` shard files."""
        if not self.shards:
            raise DataError(f"Corpus '{self.name}' is not sharded; remove data.shards (or set it to 0).")
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= self.shards:
            raise DataError(f"data.shards={n!r} is out of range for corpus '{self.name}', which has "
                            f"{self.shards} shards; set data.shards to a whole number from 1 to {self.shards}.")
        return replace(self, train=self.shard_files[:n])


def _github(repo: str, commit: str, path: str) -> str:
    return f"{GITHUB_RAW}/{repo}/{commit}/{path}"


def _hub(repo: str, revision: str, *paths: str) -> tuple[RemoteFile, ...]:
    return tuple(RemoteFile(path, None, repo=repo, revision=revision) for path in paths)


def _hub_origin(repo: str, revision: str) -> str:
    return f"{HUB}/datasets/{repo} @ {revision[:7]}"


TINY_SHAKESPEARE = CorpusSpec(
    name="tiny-shakespeare",
    folder="tiny_shakespeare",
    train=(
        RemoteFile(
            "input.txt",
            "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
            _github("karpathy/char-rnn", "6f9487a6fe5b420b7ca9afb0d7c078e37c1d1b4e", "data/tinyshakespeare/input.txt"),
        ),
    ),
    bundled="tiny_shakespeare.txt",
    license="public domain (Shakespeare); the char-rnn repository states none",
    about="Karpathy's 1.1 MB of Shakespeare plays (char-rnn), bundled with ablab",
    origin="bundled; github.com/karpathy/char-rnn @ 6f9487a",
    size_bytes=1_115_394,
)

TINYSTORIES_SAMPLE = CorpusSpec(
    name="tinystories-sample",
    folder="tinystories",
    train=(
        RemoteFile(
            "TinyStories-train-first2MiB.txt",
            "5352b299dcb1a32898b2d779b145b5a05f3e1265953fd21c264c9f9f9c9ae33d",
            _github("gusjengis/toy-RNN", "e4c7ff8bba4ff7989e69a3a816ebe4b14813b41e", "data/tinystories_sample.txt"),
        ),
    ),
    val=(
        RemoteFile(
            "tinystories_val_slice.txt",
            "5fc1fb0113df62b567fb271806cd645ce8d75f59c58ca0b764c03d3b6ff34ca6",
            _github("yuninxia/moe-routing-bench", "bb9bb0bd461aa77cf6ab89423b758f586a6f75d1", "data/tinystories_val.txt"),
        ),
    ),
    split_note=(
        "own validation split: train = first 2 MiB of the TinyStories V1 train split, "
        "val = first stories of the TinyStories validation split"
    ),
    document_separator="<|endoftext|>",  # the train slice's 2,316 stories; the val slice is one text
    license="CDLA-Sharing-1.0",
    about="A 2 MiB slice of TinyStories V1 (train) and 776 KiB of its validation stories, for tests and quick tries",
    origin="github.com/gusjengis/toy-RNN @ e4c7ff8, github.com/yuninxia/moe-routing-bench @ bb9bb0b",
    size_bytes=2_097_152 + 794_375,  # both stated in tinystories/SOURCE.md
)

# Both files were edited (train: a cut line removed) or reconstructed (test: blank-line layout)
# after download, so no origin holds these bytes: no url.
WIKITEXT_2_SAMPLE = CorpusSpec(
    name="wikitext-2-sample",
    folder="wikitext-2",
    train=(RemoteFile("raw_train_first1MB_nonblank.txt", "38b897c7dbdffa3761182c0e615c28e4135bfeb1a857cd60adfedd6a74b7d693"),),
    val=(RemoteFile("raw_test.txt", "173c87a53759e0201f33e0ccf978e510c2042d7f2cb78229d9a50d79b9e7dd08"),),
    split_note=(
        "own validation split: train = first ~9% of the wikitext-2-raw-v1 train split (blank lines dropped), "
        "val = the complete wikitext-2-raw-v1 test split (no raw validation split is available)"
    ),
    license="CC BY-SA 3.0 and GFDL",
    about="About 1 MB of the WikiText-2 (raw) train split and its whole test split as text, for tests",
    origin="ABLAB_DATA only (edited after download; see wikitext-2/SOURCE.md)",
    size_bytes=999_813 + 1_290_590,  # the two files in the shared data folder
)

_ZIPF_REPO, _ZIPF_COMMIT = "rounaksalim95/Stats_Project_Zipf_Law", "bd261d9aecf0f16f931cf088f6ca87f79322ae24"
# (file name, origin path in the Zipf repository, sha256) from gutenberg/SOURCE.md.
_GUTENBERG_BOOKS = (
    ("pg2600_war_and_peace.txt", "2600-0.txt", "3bb73e3f3bdc6b5e46f8ad49f750cc84883d96701d1057e2446b1d27cf8d974c"),
    ("pg135_les_miserables.txt", "135-0.txt", "8c341daf5c2f6c415b3b3b9211f201c5abf892bea409fb70cd2bc90b8cbde116"),
    ("pg1184_count_of_monte_cristo.txt", "1184-0.txt", "c0ddd676dee0a0c55525ffd96ff3923ed83cabe3b2733538983f84651f90908c"),
    ("pg2701_moby_dick.txt", "2701-0.txt", "9af138ea14ac0ea678a1fe61220cbed1de53faacabe25508ac6c17176cc6aa0e"),
    ("pg2554_crime_and_punishment.txt", "2554-0.txt", "39173a530fb28d68db81d7a10cc57b7cde66212de2c9f34e0abec9229c06e59a"),
    ("pg1400_great_expectations.txt", "1400-0.txt", "fa0a4e0799afe55beb17cf67891ce70037c009274f33d6c9cc732d79907e7128"),
    ("pg158_emma.txt", "158-0.txt", "6a053712e29925d6d275db9e6ab708f3feb42f83ef9ed91b75cea153904b7141"),
    ("pg345_dracula.txt", "pg345.txt", "cd9cf385c07aec8c40b7ae91bf3f3f05b896d3b89fcd8fa011ebf8a87600b70b"),
    ("pg98_tale_of_two_cities.txt", "98-0.txt", "f4ca1a3f49439fbeb28a61e3d578a2629b3549804cb99c81ebd95bf5f3fc1c7a"),
    ("pg161_sense_and_sensibility.txt", "pg161.txt", "5f5a78e0e343b11eec3c6ebe346cd7587ef785873538f2e5bcabcb08345f6b41"),
    ("pg768_wuthering_heights.txt", "pg768.txt", "67b621c150c5bfee5fed7cec2960ab5c4b2251725e2b5ff629a179e4797272fb"),
    ("pg76_huckleberry_finn.txt", "76-0.txt", "8a097cadeee04aed14a9edd481061849fa926f06aa7249c2aa1e915f3c29101b"),
    ("pg2591_grimms_fairy_tales.txt", "2591-0.txt", "e6439bd511820742e842e21b75e89b394d3809eec82ca56b506c39ff39d4a7d6"),
    ("pg33_scarlet_letter.txt", "pg33.txt", "2eaf23e603f3c9d6cbcf77fecdfdb18d08b76a0d91f2a48c7365c57018c2ebd0"),
    ("pg174_picture_of_dorian_gray.txt", "pg174.txt", "281e8db4ffdd686636ff7668dc16617181229d8f1a68dddb60a8f5c08ec1b892"),
    ("pg2814_dubliners.txt", "2814-0.txt", "5d85658e92cee01590bf72905717947939fdae74650a5962db861d24f643cd58"),
    ("pg120_treasure_island.txt", "pg120.txt", "bc827c9f1f8edde62cadf82eadec48280daf89c38d2f3a7c837404d9e13aa53a"),
    ("pg236_jungle_book.txt", "236-0.txt", "023df58a6feb7e6057e538e76d9928f593110e72221781c2e00c443571653b2a"),
    ("pg244_study_in_scarlet.txt", "244-0.txt", "73c99fa3c84770b559bc392f30608c10507dbeb4bab545b0e8b1aef7c96db7be"),
    ("pg46_christmas_carol.txt", "pg46.txt", "820a8aa531461c62738055688fd02d2e1a290924e585bd38ad9e18c80b54e7da"),
)

GUTENBERG = CorpusSpec(
    name="gutenberg",
    folder="gutenberg",
    train=tuple(
        RemoteFile(name, sha, _github(_ZIPF_REPO, _ZIPF_COMMIT, origin)) for name, origin, sha in _GUTENBERG_BOOKS
    )
    + (
        # The origin stores Tom Sawyer as Windows-1252; the shared copy is that text re-encoded as UTF-8.
        RemoteFile(
            "pg74_tom_sawyer.txt",
            "675b8f7c5556f3b9e68f445dc0f02788a437923601329edb955e061c6769fc61",
            _github(_ZIPF_REPO, _ZIPF_COMMIT, "74-0.txt"),
            url_sha256="5be8be4e6bdd57e42258682b5c4b87b89fad44e9a2a9903148cca1732f56a9ad",
            url_encoding="cp1252",
        ),
        RemoteFile(
            "pg1342_pride_and_prejudice.txt",
            "86dab871eec9c0cef97f4cb6313f86c6cc48f6f7809534e65cd3f1c1d486d247",
            _github("gutenbergbooks/1342", "041e520899f9a02af517d6cb253bc1fdfbf923e2", "1342-0.txt"),
        ),
    ),
    documents=True,
    gutenberg=True,
    license="public domain in the USA; Project Gutenberg License",
    about="22 classic English novels from Project Gutenberg, one document per book (header and footer cut)",
    origin="github.com/rounaksalim95/Stats_Project_Zipf_Law @ bd261d9, github.com/gutenbergbooks/1342 @ 041e520",
    size_bytes=21_475_890,  # the 22 files in the shared data folder
)

# The files CS336 trains on; stories are separated by <|endoftext|> lines.
_TINYSTORIES_REPO, _TINYSTORIES_REV = "roneneldan/TinyStories", "f54c09fd23315a6f9c86f9dc80f725de7d8f9c64"
TINYSTORIES = CorpusSpec(
    name="tinystories",
    folder="tinystories",
    train=_hub(_TINYSTORIES_REPO, _TINYSTORIES_REV, "TinyStoriesV2-GPT4-train.txt"),
    val=_hub(_TINYSTORIES_REPO, _TINYSTORIES_REV, "TinyStoriesV2-GPT4-valid.txt"),
    split_note="own validation split: TinyStoriesV2-GPT4-valid.txt",
    license="CDLA-Sharing-1.0",
    about="TinyStories V2: short stories written by GPT-4 in a 3-year-old's vocabulary (Eldan & Li, 2023)",
    origin=_hub_origin(_TINYSTORIES_REPO, _TINYSTORIES_REV),
    document_separator="<|endoftext|>",
)

TINYSTORIES_V1 = replace(
    TINYSTORIES,
    name="tinystories-v1",
    train=_hub(_TINYSTORIES_REPO, _TINYSTORIES_REV, "TinyStories-train.txt"),
    val=_hub(_TINYSTORIES_REPO, _TINYSTORIES_REV, "TinyStories-valid.txt"),
    split_note="own validation split: TinyStories-valid.txt",
    about="TinyStories V1: the GPT-3.5 and GPT-4 stories the paper's models were trained on",
)

# Rows are lines of the articles (blank lines included), so a "document" is a row.
_WIKITEXT_REPO, _WIKITEXT_REV = "Salesforce/wikitext", "b08601e04326c79dfdd32d625aee71d232d685c3"
WIKITEXT_2 = CorpusSpec(
    name="wikitext-2",
    folder="wikitext",
    train=_hub(_WIKITEXT_REPO, _WIKITEXT_REV, "wikitext-2-raw-v1/train-00000-of-00001.parquet"),
    val=_hub(_WIKITEXT_REPO, _WIKITEXT_REV, "wikitext-2-raw-v1/validation-00000-of-00001.parquet"),
    split_note="own validation split: the wikitext-2-raw-v1 validation split",
    license="CC BY-SA 3.0 and GFDL",
    about="WikiText-2 (raw): 2M words of Wikipedia Good and Featured articles (Merity et al., 2016)",
    origin=_hub_origin(_WIKITEXT_REPO, _WIKITEXT_REV),
    fmt="parquet",
)

WIKITEXT_103 = replace(
    WIKITEXT_2,
    name="wikitext-103",
    train=_hub(_WIKITEXT_REPO, _WIKITEXT_REV, "wikitext-103-raw-v1/train-00000-of-00002.parquet",
               "wikitext-103-raw-v1/train-00001-of-00002.parquet"),
    val=_hub(_WIKITEXT_REPO, _WIKITEXT_REV, "wikitext-103-raw-v1/validation-00000-of-00001.parquet"),
    split_note="own validation split: the wikitext-103-raw-v1 validation split",
    about="WikiText-103 (raw): 103M words of Wikipedia Good and Featured articles (Merity et al., 2016)",
)

# No public code we found pins a commit of fineweb-edu, so "main" is asked for and the commit the Hub
# answers with (X-Repo-Commit) is what each downloaded file's provenance records.
_FINEWEB_REPO, _FINEWEB_REV = "HuggingFaceFW/fineweb-edu", "main"
_FINEWEB_SHARDS = _hub(_FINEWEB_REPO, _FINEWEB_REV, *(f"sample/10BT/{n:03d}_00000.parquet" for n in range(14)))
FINEWEB_EDU_10BT = CorpusSpec(
    name="fineweb-edu-10bt",
    folder="fineweb-edu",
    train=_FINEWEB_SHARDS[:1],
    license="ODC-By 1.0",
    about="FineWeb-Edu sample-10BT: 10B GPT-2 tokens of educational web pages, in 14 parquet shards",
    origin=f"{HUB}/datasets/{_FINEWEB_REPO} @ main (the commit obtained is recorded)",
    fmt="parquet",
    shards=len(_FINEWEB_SHARDS),
    default_shards=1,
    shard_files=_FINEWEB_SHARDS,
)

CORPORA: dict[str, CorpusSpec] = {spec.name: spec for spec in (
    TINYSTORIES, TINYSTORIES_V1, WIKITEXT_2, WIKITEXT_103, FINEWEB_EDU_10BT, TINY_SHAKESPEARE, GUTENBERG,
    TINYSTORIES_SAMPLE, WIKITEXT_2_SAMPLE)}
