"""Synthetic reference tasks whose causal tokens are known by construction.

Every :class:`Example` records, for each output token, the prompt tokens that cause it
in the data-generating process. The reference models (``scopecheck.reference``)
are trained on these tasks, so attribution claims about them can be checked against a
ground truth instead of against intuition.

Tokens are words and punctuation marks: the shipped word-level tokenizers split on
whitespace and isolate every punctuation character, so ``"black."`` is ``"black", "."``
and ``Example.prompt_tokens`` equal the tokenizer's tokens exactly.

Tasks
-----
``translate``
    Toy English -> French translation with article, verb and adjective agreement
    (seed 000, Figure 1): ``"Translate to French: The dog is black."`` ->
    ``"Le chien est noir."``.
``retrieval``
    A two-segment retrieval task in the style of seed 004's curated set: an irrelevant
    story (distractor), then a fact holding the answer, then a question:
    ``"Story: the fox sat near a red box. Fact: the key is blue. Question: what color
    is the key? Answer:"`` -> ``"blue"``.

Train/held-out splits are disjoint by content: a fixed set of content pairs
((noun, adjective) for ``translate``, (object, color) for ``retrieval``) is held out,
chosen by a stable hash, and never appears in training examples.

Torch-free on purpose.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from functools import lru_cache

from scopecheck.spec.references import SPLITS

__all__ = [
    "Example",
    "TaskInfo",
    "TASKS",
    "SPLITS",
    "generate",
    "vocabulary",
    "split_of",
    "translate_example",
    "capitals_example",
    "open_capitals_example",
    "CAPITALS",
    "retrieval_example",
    "figure1_example",
    "tokenize_words",
]

_PUNCT = frozenset(".,:;!?")


@dataclass(frozen=True)
class Example:
    """One task instance with its causal ground truth.

    ``causal[j]`` lists indices into ``prompt_tokens`` that cause ``output_tokens[j]``;
    ``segments`` maps a segment name to a half-open range ``(start, stop)`` of
    ``prompt_tokens`` indices. Indices never count special tokens (``<bos>``).
    """

    task: str
    prompt: str
    output: str
    prompt_tokens: tuple[str, ...]
    output_tokens: tuple[str, ...]
    causal: tuple[tuple[int, ...], ...]
    segments: dict[str, tuple[int, int]] = field(hash=False)


@dataclass(frozen=True)
class TaskInfo:
    name: str
    summary: str
    example_prompt: str
    example_output: str
    segments: tuple[str, ...]          # segment names an example may carry
    causal_rule: str                   # how causal sets are constructed
    heldout_rule: str                  # how the held-out split is defined
    max_output_tokens: int             # longest output, in tokens (without <eos>)
    words: tuple[str, ...]             # every word/punctuation token the task can produce


def tokenize_words(text: str) -> tuple[str, ...]:
    """Split ``text`` exactly like the reference tokenizers (whitespace, isolated punctuation)."""
    out: list[str] = []
    for chunk in text.split():
        cur = ""
        for ch in chunk:
            if ch in _PUNCT:
                if cur:
                    out.append(cur)
                    cur = ""
                out.append(ch)
            else:
                cur += ch
        if cur:
            out.append(cur)
    return tuple(out)


def _detok(tokens: tuple[str, ...] | list[str]) -> str:
    """Join word tokens into natural text: no space before punctuation."""
    text = ""
    for t in tokens:
        if not text or t in _PUNCT:
            text += t
        else:
            text += " " + t
    return text


def _heldout_pair(namespace: str, a: str, b: str) -> bool:
    digest = hashlib.sha256(f"{namespace}:{a}:{b}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 5 == 0


# ----------------------------------------------------------------------------------------
# translate
# ----------------------------------------------------------------------------------------

#: (English singular, English plural, French singular, French plural, gender)
NOUNS: tuple[tuple[str, str, str, str, str], ...] = (
    ("dog", "dogs", "chien", "chiens", "m"),
    ("cat", "cats", "chat", "chats", "m"),
    ("horse", "horses", "cheval", "chevaux", "m"),
    ("book", "books", "livre", "livres", "m"),
    ("hat", "hats", "chapeau", "chapeaux", "m"),
    ("wall", "walls", "mur", "murs", "m"),
    ("bed", "beds", "lit", "lits", "m"),
    ("boat", "boats", "bateau", "bateaux", "m"),
    ("house", "houses", "maison", "maisons", "f"),
    ("car", "cars", "voiture", "voitures", "f"),
    ("flower", "flowers", "fleur", "fleurs", "f"),
    ("chair", "chairs", "chaise", "chaises", "f"),
    ("door", "doors", "porte", "portes", "f"),
    ("apple", "apples", "pomme", "pommes", "f"),
    ("shirt", "shirts", "chemise", "chemises", "f"),
    ("cow", "cows", "vache", "vaches", "f"),
)

#: (English, masc. sing., fem. sing., masc. plur., fem. plur.)
ADJECTIVES: tuple[tuple[str, str, str, str, str], ...] = (
    ("black", "noir", "noire", "noirs", "noires"),
    ("white", "blanc", "blanche", "blancs", "blanches"),
    ("green", "vert", "verte", "verts", "vertes"),
    ("blue", "bleu", "bleue", "bleus", "bleues"),
    ("grey", "gris", "grise", "gris", "grises"),
    ("red", "rouge", "rouge", "rouges", "rouges"),
    ("small", "petit", "petite", "petits", "petites"),
    ("big", "grand", "grande", "grands", "grandes"),
    ("heavy", "lourd", "lourde", "lourds", "lourdes"),
    ("old", "vieux", "vieille", "vieux", "vieilles"),
    ("new", "nouveau", "nouvelle", "nouveaux", "nouvelles"),
    ("cold", "froid", "froide", "froids", "froides"),
)

_NOUN = {n[0]: n for n in NOUNS}
_ADJ = {a[0]: a for a in ADJECTIVES}
_TRANSLATE_PREFIX = ("Translate", "to", "French", ":")
#: The Figure-1 pair is forced into the training split.
_FORCED_TRAIN_PAIRS = frozenset({("dog", "black")})
#: Sampling weights of the sentence shapes.
_SHAPES = (("single", 0.5), ("very", 0.2), ("double", 0.3))
_EXCLAIM_P = 0.2


def _translate_pair_heldout(noun: str, adj: str) -> bool:
    if (noun, adj) in _FORCED_TRAIN_PAIRS:
        return False
    return _heldout_pair("translate", noun, adj)


def translate_example(noun: str, adjective: str, *, plural: bool = False, very: bool = False,
                      adjective2: str | None = None, punct: str = ".") -> Example:
    """Build one ``translate`` example.

    ``noun``/``adjective``/``adjective2`` are English lemmas (``"dog"``, ``"black"``);
    ``very`` adds an intensifier (single-adjective sentences only); ``adjective2`` makes
    a two-adjective sentence ``"... is black and small."``; ``punct`` is ``"."`` or ``"!"``.
    """
    if noun not in _NOUN:
        raise ValueError(f"unknown noun {noun!r}; known: {', '.join(_NOUN)}")
    for a in (adjective, adjective2):
        if a is not None and a not in _ADJ:
            raise ValueError(f"unknown adjective {a!r}; known: {', '.join(_ADJ)}")
    if adjective2 is not None and (very or adjective2 == adjective):
        raise ValueError("two-adjective sentences take two distinct adjectives and no 'very'")
    if punct not in (".", "!"):
        raise ValueError("punct must be '.' or '!'")
    en_sg, en_pl, fr_sg, fr_pl, gender = _NOUN[noun]
    form = (1 if gender == "m" else 2) + (2 if plural else 0)

    p: list[str] = list(_TRANSLATE_PREFIX)
    seg: dict[str, tuple[int, int]] = {"instruction": (0, len(p))}
    start = len(p)
    p.append("The")
    seg["determiner"] = (len(p) - 1, len(p))
    p.append(en_pl if plural else en_sg)
    i_noun = len(p) - 1
    seg["noun"] = (i_noun, i_noun + 1)
    p.append("are" if plural else "is")
    i_verb = len(p) - 1
    seg["verb"] = (i_verb, i_verb + 1)

    o: list[str] = ["Les" if plural else ("Le" if gender == "m" else "La"),
                    fr_pl if plural else fr_sg,
                    "sont" if plural else "est"]
    # Number is encoded twice in English (dog/dogs and is/are), so every number-dependent
    # French token has both as causes; gender comes from the noun alone.
    c: list[tuple[int, ...]] = [(i_noun, i_verb), (i_noun, i_verb), (i_verb, i_noun)]
    if very:
        p.append("very")
        seg["very"] = (len(p) - 1, len(p))
        o.append("très")
        c.append((len(p) - 1,))
    p.append(adjective)
    i_adj = len(p) - 1
    seg["adjective"] = (i_adj, i_adj + 1)
    o.append(_ADJ[adjective][form])
    c.append((i_adj, i_noun, i_verb))
    if adjective2 is not None:
        p.append("and")
        seg["and"] = (len(p) - 1, len(p))
        o.append("et")
        c.append((len(p) - 1,))
        p.append(adjective2)
        i_adj2 = len(p) - 1
        seg["adjective2"] = (i_adj2, i_adj2 + 1)
        o.append(_ADJ[adjective2][form])
        c.append((i_adj2, i_noun, i_verb))
    p.append(punct)
    seg["punct"] = (len(p) - 1, len(p))
    o.append(punct)
    c.append((len(p) - 1,))
    seg["sentence"] = (start, len(p))
    return Example("translate", _detok(p), _detok(o), tuple(p), tuple(o), tuple(c), seg)


def figure1_example() -> Example:
    """``"Translate to French: The dog is black."`` -> ``"Le chien est noir."`` (seed 000, Figure 1)."""
    return translate_example("dog", "black")


_TKey = tuple  # (noun, plural, very, adjective, adjective2 | None)


@lru_cache(maxsize=None)
def _translate_keys() -> dict[str, dict[str, tuple[_TKey, ...]]]:
    """All translate contents, by split and by shape, in a fixed order."""
    out: dict[str, dict[str, list[_TKey]]] = {s: {sh: [] for sh, _ in _SHAPES} for s in SPLITS}
    for noun in _NOUN:
        for plural in (False, True):
            for a1 in _ADJ:
                for shape, a2 in [("single", None), ("very", None)] + [
                        ("double", b) for b in _ADJ if b != a1]:
                    pairs = [(noun, a1)] + ([(noun, a2)] if a2 else [])
                    split = "heldout" if any(_translate_pair_heldout(*q) for q in pairs) else "train"
                    out[split][shape].append((noun, plural, shape == "very", a1, a2))
    return {s: {sh: tuple(v) for sh, v in d.items()} for s, d in out.items()}


def _generate_translate(n: int, split: str, rng: random.Random) -> list[Example]:
    keys = _translate_keys()[split]
    streams: dict[str, list[_TKey]] = {}
    shapes = [s for s, _ in _SHAPES]
    weights = [w for _, w in _SHAPES]
    out = []
    for _ in range(n):
        shape = rng.choices(shapes, weights)[0]
        if not streams.get(shape):
            # walk the split's contents of this shape in a random order, without
            # replacement until exhausted, then start a new random pass
            pool = list(keys[shape])
            rng.shuffle(pool)
            streams[shape] = pool
        noun, plural, very, a1, a2 = streams[shape].pop()
        # punctuation is drawn at its own rate; both variants share a split
        punct = "!" if rng.random() < _EXCLAIM_P else "."
        out.append(translate_example(noun, a1, plural=plural, very=very, adjective2=a2, punct=punct))
    return out


# ----------------------------------------------------------------------------------------
# retrieval
# ----------------------------------------------------------------------------------------

OBJECTS = ("key", "box", "ball", "cup", "hat", "book", "bag", "lamp",
           "door", "pen", "coin", "shoe", "ring", "kite", "bell", "sock")
COLORS = ("red", "blue", "green", "yellow", "black", "white",
          "pink", "brown", "orange", "purple", "grey", "gold")
ANIMALS = ("cat", "dog", "fox", "bird", "cow", "frog", "pig", "owl", "bear", "duck")
VERBS = ("sat", "slept", "waited", "played", "stood", "hid")
PREPS = ("near", "under", "behind", "beside")


@lru_cache(maxsize=None)
def _retrieval_pairs() -> dict[str, tuple[tuple[str, str], ...]]:
    out: dict[str, list[tuple[str, str]]] = {s: [] for s in SPLITS}
    for obj in OBJECTS:
        for col in COLORS:
            out["heldout" if _heldout_pair("retrieval", obj, col) else "train"].append((obj, col))
    return {s: tuple(v) for s, v in out.items()}


def _story_sentence(rng: random.Random, banned: str) -> list[str]:
    obj = rng.choice([o for o in OBJECTS if o != banned])
    col = rng.choice(COLORS)
    animal = rng.choice(ANIMALS)
    t = rng.randrange(3)
    if t == 0:
        return ["the", animal, rng.choice(VERBS), rng.choice(PREPS), "a", col, obj, "."]
    if t == 1:
        return ["a", col, obj, "was", rng.choice(PREPS), "the", animal, "."]
    return ["the", animal, "has", "a", col, obj, "."]


def retrieval_example(obj: str, color: str, story: list[list[str]] | None = None, *,
                      rng: random.Random | None = None) -> Example:
    """Build one ``retrieval`` example.

    ``story`` is a list of distractor sentences, each a list of word tokens (ending with
    ``"."``); when omitted, 1-3 random sentences are drawn from ``rng`` (default seed 0).
    The queried object must not occur in the story.
    """
    if obj not in OBJECTS:
        raise ValueError(f"unknown object {obj!r}; known: {', '.join(OBJECTS)}")
    if color not in COLORS:
        raise ValueError(f"unknown color {color!r}; known: {', '.join(COLORS)}")
    if story is None:
        rng = rng or random.Random(0)
        story = [_story_sentence(rng, obj) for _ in range(rng.randint(1, 3))]
    if any(obj in s for s in story):
        raise ValueError(f"the queried object {obj!r} must not appear in the distractor")
    p: list[str] = ["Story", ":"]
    for s in story:
        p.extend(s)
    seg: dict[str, tuple[int, int]] = {"distractor": (0, len(p))}
    e0 = len(p)
    p += ["Fact", ":", "the", obj, "is", color, "."]
    seg["evidence"] = (e0, len(p))
    seg["fact_object"] = (e0 + 3, e0 + 4)
    seg["fact_color"] = (e0 + 5, e0 + 6)
    q0 = len(p)
    p += ["Question", ":", "what", "color", "is", "the", obj, "?", "Answer", ":"]
    seg["question"] = (q0, len(p))
    seg["query_object"] = (q0 + 6, q0 + 7)
    return Example("retrieval", _detok(p), color, tuple(p), (color,), ((e0 + 5,),), seg)


def _generate_retrieval(n: int, split: str, rng: random.Random) -> list[Example]:
    pairs = _retrieval_pairs()[split]
    out: list[Example] = []
    seen: set[str] = set()
    tries = 0
    while len(out) < n:
        obj, col = rng.choice(pairs)
        ex = retrieval_example(obj, col, rng=rng)
        tries += 1
        if ex.prompt in seen and tries < 20 * n:
            continue
        seen.add(ex.prompt)
        out.append(ex)
    return out


# ----------------------------------------------------------------------------------------
# registry
# ----------------------------------------------------------------------------------------

# ----------------------------------------------------------------------------------------
# capitals (a task where denoising stages matter)
# ----------------------------------------------------------------------------------------

CAPITALS = (("France", "Paris"), ("Italy", "Rome"), ("Germany", "Berlin"), ("Spain", "Madrid"),
            ("Japan", "Tokyo"), ("Egypt", "Cairo"), ("Peru", "Lima"), ("Kenya", "Nairobi"))
_OPEN_PROMPT = ("Question", ":", "name", "a", "capital", "and", "its", "country", ".", "Answer", ":")
_OPEN_P = 0.5


def capitals_example(country: str) -> Example:
    """``"Question: what is the capital of France? Answer:"`` -> ``"Paris, France."``; the city and
    the country in the answer are caused by the prompt's country."""
    city = dict(CAPITALS)[country]
    p = ["Question", ":", "what", "is", "the", "capital", "of", country, "?", "Answer", ":"]
    i = p.index(country)
    o = [city, ",", country, "."]
    return Example("capitals", _detok(p), _detok(o), tuple(p), tuple(o), ((i,), (), (i,), ()),
                   {"question": (0, 9), "country": (i, i + 1), "answer_slot": (9, 11)})


def open_capitals_example(country: str) -> Example:
    """The open question, answered by ``country``'s pair: nothing in the prompt causes which pair
    (the chain chooses it), so the causal sets are empty; the city and the country agree."""
    city = dict(CAPITALS)[country]
    p = list(_OPEN_PROMPT)
    o = [city, ",", country, "."]
    return Example("capitals", _detok(p), _detok(o), tuple(p), tuple(o), ((), (), (), ()),
                   {"question": (0, 9), "answer_slot": (9, 11)})


def _generate_capitals(n: int, split: str, rng: random.Random) -> list[Example]:
    out = []
    for _ in range(n):
        country = rng.choice(CAPITALS)[0]
        out.append(open_capitals_example(country) if rng.random() < _OPEN_P else capitals_example(country))
    return out


def _capitals_words() -> tuple[str, ...]:
    words = ["Question", ":", "what", "is", "the", "capital", "of", "?", "Answer", *_OPEN_PROMPT, ",", "."]
    for c, k in CAPITALS:
        words += [c, k]
    return tuple(dict.fromkeys(words))


def _translate_words() -> tuple[str, ...]:
    words = [*_TRANSLATE_PREFIX, "The", "is", "are", "very", "and", ".", "!",
             "Le", "La", "Les", "est", "sont", "très", "et"]
    for n in NOUNS:
        words += [n[0], n[1], n[2], n[3]]
    for a in ADJECTIVES:
        words += list(a)
    return tuple(dict.fromkeys(words))


def _retrieval_words() -> tuple[str, ...]:
    words = ["Story", "Fact", "Question", "Answer", ":", ".", "?", "the", "a", "is", "was",
             "has", "what", "color", *OBJECTS, *COLORS, *ANIMALS, *VERBS, *PREPS]
    return tuple(dict.fromkeys(words))


TASKS: dict[str, TaskInfo] = {
    "translate": TaskInfo(
        name="translate",
        summary="toy English->French translation with article, verb and adjective agreement "
                f"({len(NOUNS)} nouns of both genders, singular/plural; {len(ADJECTIVES)} adjectives "
                "with four forms; optional 'very', optional second adjective, '.' or '!')",
        example_prompt="Translate to French: The dog is black.",
        example_output="Le chien est noir.",
        segments=("instruction", "sentence", "determiner", "noun", "verb", "very", "adjective",
                  "and", "adjective2", "punct"),
        causal_rule="article (Le/La/Les) <- {noun, is/are}; French noun <- {noun, is/are}; "
                    "est/sont <- {is/are, noun}; très <- {very}; each adjective <- {its English "
                    "adjective, noun, is/are}; et <- {and}; final punctuation <- {final punctuation}. "
                    "'Translate to French :' and 'The' are constant and never causal. Number is "
                    "encoded twice (noun form and is/are), so both cause every number-dependent "
                    "token; gender comes from the noun alone.",
        heldout_rule="(noun, adjective) pairs whose sha256('translate:<noun>:<adj>') is 0 mod 5 are "
                     "held out (except dog/black, forced into training); an example is held out iff "
                     "any of its (noun, adjective) pairs is.",
        max_output_tokens=7,
        words=_translate_words(),
    ),
    "retrieval": TaskInfo(
        name="retrieval",
        summary="two-segment retrieval in the style of seed 004's curated set: an irrelevant story "
                "(distractor, 1-3 sentences with other objects and colors), a fact holding the answer, "
                "and a question; the answer is one color word",
        example_prompt="Story: the fox sat near a red box. Fact: the key is blue. "
                       "Question: what color is the key? Answer:",
        example_output="blue",
        segments=("distractor", "evidence", "question", "fact_object", "fact_color", "query_object"),
        causal_rule="answer <- {the color token of the fact in the evidence segment}; the queried "
                    "object never occurs in the distractor, whose colors (which may equal the answer) "
                    "are never causal. The wider supporting span is segment 'evidence'.",
        heldout_rule="(object, color) pairs whose sha256('retrieval:<object>:<color>') is 0 mod 5 "
                     "are held out; an example is held out iff its fact uses a held-out pair.",
        max_output_tokens=1,
        words=_retrieval_words(),
    ),
    "capitals": TaskInfo(
        name="capitals",
        summary=f"capitals of {len(CAPITALS)} countries as 'City, Country.': half the prompts name the country "
                "(a deterministic answer), half ask the open question 'name a capital and its country', "
                "answered by a pair drawn uniformly, so whichever of city or country a diffusion chain "
                "commits first decides the other (a task where denoising stages matter)",
        example_prompt="Question: what is the capital of France? Answer:",
        example_output="Paris, France.",
        segments=("question", "country", "answer_slot"),
        causal_rule="specific question: the city and the country in the answer <- {the prompt's country}; "
                    "',' and '.' are constant; open question: no prompt token causes which pair (empty sets)",
        heldout_rule="the content space is 8 specific prompts and one open prompt: the held-out split is an "
                     "independent draw from the same distribution (nothing is held out by content)",
        max_output_tokens=4,
        words=_capitals_words(),
    ),
}


def vocabulary(task: str) -> tuple[str, ...]:
    """Every token the task can produce (prompt and output), in a fixed order."""
    return _info(task).words


def _info(task: str) -> TaskInfo:
    try:
        return TASKS[task]
    except KeyError:
        raise ValueError(f"unknown task {task!r}; known tasks: {', '.join(TASKS)}") from None


def generate(task: str, n: int, *, split: str = "train", seed: int = 0) -> list[Example]:
    """``n`` examples of ``task`` from ``split`` (``"train"`` or ``"heldout"``), reproducible from ``seed``.

    The two splits are disjoint in content. ``translate`` walks its finite content space
    without replacement (random order) before repeating; ``retrieval`` avoids duplicate
    prompts within one call.
    """
    _info(task)
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; known splits: {', '.join(SPLITS)}")
    if n < 0:
        raise ValueError("n must be >= 0")
    rng = random.Random(f"scopecheck:{task}:{split}:{int(seed)}")
    if task == "translate":
        return _generate_translate(n, split, rng)
    if task == "capitals":
        return _generate_capitals(n, split, rng)
    return _generate_retrieval(n, split, rng)


def split_of(example: Example) -> str:
    """The split (``"train"`` / ``"heldout"``) an example's content belongs to."""
    tok = example.prompt_tokens
    if example.task == "translate":
        noun_en = tok[example.segments["noun"][0]]
        noun = next(n[0] for n in NOUNS if noun_en in (n[0], n[1]))
        adjs = [tok[example.segments[k][0]] for k in ("adjective", "adjective2") if k in example.segments]
        return "heldout" if any(_translate_pair_heldout(noun, a) for a in adjs) else "train"
    if example.task == "retrieval":
        obj = tok[example.segments["fact_object"][0]]
        col = tok[example.segments["fact_color"][0]]
        return "heldout" if (obj, col) in _retrieval_pairs()["heldout"] else "train"
    if example.task == "capitals":
        return "train"
    raise ValueError(f"unknown task {example.task!r}; known tasks: {', '.join(TASKS)}")
