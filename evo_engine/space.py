"""Search spaces: typed hyperparameters and their encoding to and from the unit cube.

Every operator works on genomes in [0, 1]^d. A parameter's encoding makes the cube uniform in
the space a researcher thinks in: log-scaled floats and ints are uniform in log space, ints
occupy equal-width bins (so rounding is consistent both ways), and a categorical with k
choices occupies k equal bins.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


class SpaceError(ValueError):
    """A search space or one of its parameters is defined in a way that cannot work."""


def _clip01(u: float) -> float:
    return min(max(float(u), 0.0), 1.0)


def _exp_each(x: np.ndarray) -> np.ndarray:
    """``math.exp`` of every element: numpy's ``exp`` may differ from it in the last bit,
    and a decoded value must be the same whichever way it was computed."""
    return np.array([math.exp(t) for t in x.tolist()], dtype=np.float64)


def _patch_edges(out: list[Any], u: np.ndarray, inside: np.ndarray, decode: Any) -> list[Any]:
    """Decode the elements not ``inside`` (u outside (0, 1), a value at a bound, NaN) one by
    one: only inside is the array arithmetic the scalar ``decode``'s, bit for bit."""
    for i in np.flatnonzero(~inside).tolist():
        out[i] = decode(float(u[i]))
    return out


@dataclass(frozen=True)
class Condition:
    """``when=("model", "fno")``: the parameter is active only while ``model`` is ``"fno"``.

    ``values`` may list several values (``when=("model", ("fno", "unet"))``: active for any
    of them). The parent must be a Categorical or an Int defined earlier in the space; a
    parameter whose parent is inactive is inactive too. An inactive parameter keeps its gene
    (genomes have the space's full dimension) but is left out of ``Space.decode``'s dict, so
    the objective, the printed best, the CSV and the plots never see a value that means nothing.
    """

    parent: str
    values: tuple[Any, ...]

    def holds(self, value: Any) -> bool:
        return any(v == value and isinstance(v, bool) == isinstance(value, bool)
                   for v in self.values)

    def describe(self) -> list[Any]:
        return [self.parent, [_plain(v) for v in self.values]]


def _condition(when: Any) -> Condition | None:
    if when is None or isinstance(when, Condition):
        return when
    if not isinstance(when, (tuple, list)) or len(when) != 2 or not isinstance(when[0], str):
        raise SpaceError(
            f"when= must be (parent_name, value) or (parent_name, (value, ...)), got {when!r}"
        )
    parent, values = when
    values = tuple(values) if isinstance(values, (tuple, list, set, frozenset)) else (values,)
    if not values:
        raise SpaceError(f"when=({parent!r}, ...) needs at least one value")
    return Condition(parent, values)


def _with_when(d: dict[str, Any], when: Condition | None) -> dict[str, Any]:
    # Only present when set: unconditional spaces keep the fingerprint they always had.
    if when is not None:
        d["when"] = when.describe()
    return d


@dataclass(frozen=True)
class Float:
    """A real hyperparameter in [lo, hi]; ``log=True`` makes it uniform in log space."""

    lo: float
    hi: float
    log: bool = False
    when: Condition | None = None
    """Active only when another parameter has one of some values (see ``Condition``)."""

    kind = "float"

    def __post_init__(self) -> None:
        object.__setattr__(self, "when", _condition(self.when))
        if not (math.isfinite(self.lo) and math.isfinite(self.hi)):
            raise SpaceError(f"Float bounds must be finite, got ({self.lo}, {self.hi})")
        if self.lo >= self.hi:
            raise SpaceError(f"Float needs lo < hi, got lo={self.lo}, hi={self.hi}")
        if self.log and self.lo <= 0:
            raise SpaceError(f"Float(log=True) needs lo > 0, got lo={self.lo}")

    def _fwd(self, v: float) -> float:
        return math.log(v) if self.log else v

    def encode(self, value: Any) -> float:
        try:
            v = float(value)
        except (TypeError, ValueError):
            raise SpaceError(f"value {value!r} is not a number") from None
        if not (self.lo <= v <= self.hi):
            raise SpaceError(f"value {value!r} is outside [{self.lo}, {self.hi}]")
        a, b = self._fwd(self.lo), self._fwd(self.hi)
        return _clip01((self._fwd(v) - a) / (b - a))

    def decode(self, u: float) -> float:
        u = _clip01(u)
        if u in (0.0, 1.0):  # the bounds themselves: exp(log(lo)) may miss lo in the last bit
            return float(self.hi if u else self.lo)
        a, b = self._fwd(self.lo), self._fwd(self.hi)
        x = a + u * (b - a)
        v = math.exp(x) if self.log else x
        return min(max(v, self.lo), self.hi)

    def decode_column(self, u: np.ndarray) -> list[float]:
        """``[decode(x) for x in u]`` (the same values), computed on arrays."""
        u = np.asarray(u, dtype=np.float64)
        a, b = self._fwd(self.lo), self._fwd(self.hi)
        x = a + u * (b - a)
        v = _exp_each(x) if self.log else x
        inside = (u > 0.0) & (u < 1.0) & (v > self.lo) & (v < self.hi)
        return _patch_edges(v.tolist(), u, inside, self.decode)

    def describe(self) -> dict[str, Any]:
        return _with_when({"type": "float", "lo": self.lo, "hi": self.hi, "log": self.log}, self.when)


def _whole(value: Any) -> bool:
    """Whether ``value`` is a whole number (None, text, NaN and infinities are not)."""
    try:
        return int(value) == value
    except (TypeError, ValueError, OverflowError):
        return False


@dataclass(frozen=True)
class Int:
    """An integer hyperparameter in [lo, hi] (both included); ``log=True`` needs lo >= 1.

    The cube is cut into hi - lo + 1 bins (equal width in log space when ``log``), so
    decode(encode(v)) == v and every point of the cube decodes to an integer in bounds.
    """

    lo: int
    hi: int
    log: bool = False
    when: Condition | None = None
    """Active only when another parameter has one of some values (see ``Condition``)."""

    kind = "int"

    def __post_init__(self) -> None:
        object.__setattr__(self, "when", _condition(self.when))
        for name in ("lo", "hi"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise SpaceError(f"Int {name} must be an integer, got {v!r}")
        if self.lo >= self.hi:
            raise SpaceError(f"Int needs lo < hi, got lo={self.lo}, hi={self.hi}")
        if self.log and self.lo < 1:
            raise SpaceError(f"Int(log=True) needs lo >= 1, got lo={self.lo}")

    @property
    def levels(self) -> int:
        return int(self.hi) - int(self.lo) + 1

    def _edges(self) -> tuple[float, float]:
        if self.log:
            return math.log(self.lo - 0.5), math.log(self.hi + 0.5)
        return self.lo - 0.5, self.hi + 0.5

    def encode(self, value: Any) -> float:
        if isinstance(value, bool) or not _whole(value):
            raise SpaceError(f"value {value!r} is not an integer")
        v = int(value)
        if not (self.lo <= v <= self.hi):
            raise SpaceError(f"value {value!r} is outside [{self.lo}, {self.hi}]")
        a, b = self._edges()
        x = math.log(v) if self.log else float(v)
        return _clip01((x - a) / (b - a))

    def decode(self, u: float) -> int:
        a, b = self._edges()
        x = a + _clip01(u) * (b - a)
        v = math.floor((math.exp(x) if self.log else x) + 0.5)
        return int(min(max(v, self.lo), self.hi))

    def decode_column(self, u: np.ndarray) -> list[int]:
        """``[decode(x) for x in u]`` (the same values), computed on arrays."""
        u = np.asarray(u, dtype=np.float64)
        a, b = self._edges()
        x = a + u * (b - a)
        v = np.floor((_exp_each(x) if self.log else x) + 0.5)
        inside = (u > 0.0) & (u < 1.0) & (v >= self.lo) & (v <= self.hi)
        return _patch_edges(np.where(inside, v, 0).astype(np.int64).tolist(), u, inside,
                            self.decode)

    def describe(self) -> dict[str, Any]:
        return _with_when({"type": "int", "lo": int(self.lo), "hi": int(self.hi), "log": self.log},
                          self.when)


Tree = Mapping[str, Any]


def _tree_paths(tree: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[Any, tuple[str, ...]]]:
    """Yield (leaf, path of group names) for a nested dict/list tree of choices."""
    if isinstance(tree, Mapping):
        for key, sub in tree.items():
            yield from _tree_paths(sub, (*prefix, str(key)))
    elif isinstance(tree, (list, tuple)):
        for i, sub in enumerate(tree):
            if isinstance(sub, (Mapping, list, tuple)):
                yield from _tree_paths(sub, (*prefix, f"#{i}"))
            else:
                yield sub, prefix
    else:
        yield tree, prefix


@dataclass(frozen=True)
class Categorical:
    """One of a fixed set of choices, optionally arranged in a tree of related choices.

    ``tree`` nests the choices in groups, e.g. ``{"rectifiers": ["relu", "elu"],
    "smooth": ["gelu", "silu"]}``; ``hops(a, b)`` is the number of edges between two leaves,
    which the GA's distance-aware mutation uses. Without a tree all choices are siblings.
    """

    choices: tuple[Any, ...]
    tree: Any = None
    when: Condition | None = None
    _paths: tuple[tuple[str, ...], ...] = field(default=(), init=False, repr=False, compare=False)
    """Each choice's path of group names in the tree, by index (True == 1 in Python: a dict
    keyed by the choices merged a bool choice with an int one)."""

    kind = "categorical"

    def __init__(self, choices: Iterable[Any] | None = None, tree: Any = None,
                 when: Any = None) -> None:
        if choices is None and tree is None:
            raise SpaceError("Categorical needs choices (or a tree of choices)")
        leaves = None
        if tree is not None:
            leaves = list(_tree_paths(tree))
            if choices is None:
                choices = [leaf for leaf, _ in leaves]
        choices = tuple(choices)  # type: ignore[arg-type]
        if not choices:
            raise SpaceError("Categorical needs at least one choice, got none")
        if len(set(map(repr, choices))) != len(choices):
            raise SpaceError(f"Categorical choices must be distinct, got {list(choices)}")
        # 1 and 1.0 (or 0.0 and -0.0) are one value to Python: a value read back could not
        # say which was meant (``index`` names the first for both). Equal values hash alike.
        seen: dict[Any, Any] = {}
        for a in choices:
            if isinstance(a, float) and math.isnan(a):
                raise SpaceError(f"Categorical choice nan can never be matched (nan != nan), "
                                 f"got {list(choices)}")
            try:
                b = seen.setdefault((isinstance(a, bool), a), a)
            except TypeError:  # unhashable: compared by ``index`` only
                continue
            if b is not a:
                raise SpaceError(f"Categorical choices {b!r} and {a!r} are equal in Python "
                                 f"(give one of them), got {list(choices)}")
        paths: tuple[tuple[str, ...], ...] = tuple(() for _ in choices)
        if leaves is not None:
            leaf_values = [leaf for leaf, _ in leaves]
            if sorted(map(repr, leaf_values)) != sorted(map(repr, choices)):
                raise SpaceError(
                    f"Categorical tree leaves {leaf_values} must be exactly the choices {list(choices)}"
                )
            by_repr = {repr(leaf): path for leaf, path in leaves}
            paths = tuple(by_repr[repr(c)] for c in choices)
        object.__setattr__(self, "choices", choices)
        object.__setattr__(self, "tree", tree)
        object.__setattr__(self, "_paths", paths)
        object.__setattr__(self, "when", _condition(when))

    def index(self, value: Any) -> int:
        for i, c in enumerate(self.choices):
            # True == 1 in Python; a bool choice must not match an int value or vice versa.
            if c == value and isinstance(c, bool) == isinstance(value, bool):
                return i
        raise SpaceError(f"value {value!r} is not one of {list(self.choices)}")

    def encode(self, value: Any) -> float:
        return (self.index(value) + 0.5) / len(self.choices)

    def decode_index(self, u: float) -> int:
        k = len(self.choices)
        return min(int(math.floor(_clip01(u) * k)), k - 1)

    def decode(self, u: float) -> Any:
        return self.choices[self.decode_index(u)]

    def decode_column(self, u: np.ndarray) -> list[Any]:
        """``[decode(x) for x in u]`` (the same values), computed on arrays."""
        u = np.asarray(u, dtype=np.float64)
        k = len(self.choices)
        index = np.floor(u * k)
        inside = (u > 0.0) & (u < 1.0) & (index < k)
        choices = self.choices
        out = [choices[i] for i in np.where(inside, index, 0).astype(np.int64).tolist()]
        return _patch_edges(out, u, inside, self.decode)

    def hops(self, a: Any, b: Any) -> int:
        """Edges on the tree path between choices ``a`` and ``b`` (0 when equal)."""
        return self.hops_between(self.index(a), self.index(b))

    def hops_between(self, i: int, j: int) -> int:
        """``hops`` between the choices at indices ``i`` and ``j``."""
        if i == j:
            return 0
        pa, pb = self._paths[i], self._paths[j]
        common = 0
        for x, y in zip(pa, pb):
            if x != y:
                break
            common += 1
        return (len(pa) - common + 1) + (len(pb) - common + 1)

    def describe(self) -> dict[str, Any]:
        d: dict[str, Any] = {"type": "categorical", "choices": [_plain(c) for c in self.choices]}
        if self.tree is not None:
            d["tree"] = _plain(self.tree)
        return _with_when(d, self.when)


def _plain(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return repr(obj)


Param = Float | Int | Categorical


class Space:
    """An ordered set of named hyperparameters; genomes are points of [0, 1]^len(space)."""

    def __init__(self, params: Mapping[str, Param] | Sequence[tuple[str, Param]] | None = None, **kw: Param) -> None:
        items: list[tuple[str, Param]] = []
        if params is not None:
            items.extend(params.items() if isinstance(params, Mapping) else params)
        items.extend(kw.items())
        names = [n for n, _ in items]
        if not items:
            raise SpaceError("a search space needs at least one parameter")
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise SpaceError(f"duplicate parameter names in the search space: {dupes}")
        for name, p in items:
            if not isinstance(name, str) or not name.isidentifier():
                raise SpaceError(f"parameter name {name!r} must be a Python identifier")
            if not isinstance(p, (Float, Int, Categorical)):
                raise SpaceError(
                    f"parameter {name!r} must be Float, Int or Categorical, got {type(p).__name__}"
                )
        self._params: dict[str, Param] = dict(items)
        self._check_conditions()

    def _check_conditions(self) -> None:
        order = {n: i for i, n in enumerate(self._params)}
        for name, p in self._params.items():
            c = p.when
            if c is None:
                continue
            if c.parent not in self._params:
                raise SpaceError(f"parameter {name!r}: when= names {c.parent!r}, which is not "
                                 f"in the space")
            if order[c.parent] >= order[name]:
                raise SpaceError(f"parameter {name!r}: its condition's parent {c.parent!r} must "
                                 f"come before it in the space")
            parent = self._params[c.parent]
            if isinstance(parent, Float):
                raise SpaceError(f"parameter {name!r}: a condition's parent must be a Categorical "
                                 f"or an Int, not the Float {c.parent!r}")
            for v in c.values:
                try:
                    parent.encode(v)
                except (SpaceError, TypeError, ValueError):
                    raise SpaceError(f"parameter {name!r}: when=({c.parent!r}, {v!r}) can never "
                                     f"hold ({v!r} is not a value of {c.parent!r})") from None

    @property
    def conditional(self) -> bool:
        """Whether any parameter is active only under a condition."""
        return any(p.when is not None for p in self._params.values())

    def active(self, values: Mapping[str, Any]) -> list[str]:
        """The names of the parameters active for ``values`` (a dict of decoded values)."""
        on: list[str] = []
        for name, p in self._params.items():
            c = p.when
            if c is None or (c.parent in on and c.parent in values
                             and c.holds(values[c.parent])):
                on.append(name)
        return on

    @property
    def names(self) -> list[str]:
        return list(self._params)

    @property
    def dim(self) -> int:
        return len(self._params)

    def __len__(self) -> int:
        return len(self._params)

    def __getitem__(self, name: str) -> Param:
        return self._params[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._params)

    def items(self) -> Iterable[tuple[str, Param]]:
        return self._params.items()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Space) and self.describe() == other.describe()

    def __hash__(self) -> int:
        return hash(repr(self.describe()))

    def __repr__(self) -> str:
        return f"Space({', '.join(f'{n}={p!r}' for n, p in self._params.items())})"

    def encode(self, params: Mapping[str, Any]) -> np.ndarray:
        """The genome of ``params``; an inactive parameter may be left out (its gene is 0.5)."""
        active = set(self.active(params))
        missing = [n for n in self._params if n not in params and n in active]
        extra = [n for n in params if n not in self._params]
        if missing or extra:
            raise SpaceError(f"params do not match the space: missing {missing}, unknown {extra}")
        genes = []
        for n, p in self._params.items():
            try:
                genes.append(p.encode(params[n]) if n in params else 0.5)
            except SpaceError as exc:
                raise SpaceError(f"parameter {n!r}: {exc}") from None
        return np.array(genes, dtype=np.float64)

    def decode(self, genome: Sequence[float] | np.ndarray) -> dict[str, Any]:
        """The active parameters' values for ``genome`` (inactive ones are absent)."""
        g = np.asarray(genome, dtype=np.float64).reshape(-1)
        if g.shape[0] != self.dim:
            raise SpaceError(f"genome has {g.shape[0]} genes, the space has {self.dim}")
        values = {n: p.decode(float(u)) for (n, p), u in zip(self._params.items(), g)}
        if not self.conditional:
            return values
        return {n: values[n] for n in self.active(values)}

    def kinds(self) -> list[str]:
        return [p.kind for p in self._params.values()]

    def column_kinds(self) -> dict[str, str]:
        """The store's column kind per parameter: a conditional Int is stored as a float so
        that an inactive value can be NaN (its active values stay whole numbers)."""
        return {n: "float" if p.kind == "int" and p.when is not None else p.kind
                for n, p in self._params.items()}

    def describe(self) -> dict[str, Any]:
        """A plain, JSON-serialisable description: the space's part of a run's fingerprint."""
        return {n: p.describe() for n, p in self._params.items()}

    @classmethod
    def from_description(cls, d: Mapping[str, Mapping[str, Any]]) -> Space:
        params: dict[str, Param] = {}
        for n, p in d.items():
            t = p["type"]
            when = p.get("when")
            if t == "float":
                params[n] = Float(p["lo"], p["hi"], log=p["log"], when=when)
            elif t == "int":
                params[n] = Int(p["lo"], p["hi"], log=p["log"], when=when)
            elif t == "categorical":
                for c in p["choices"]:
                    if not isinstance(c, (str, int, float, bool)) and c is not None:
                        # A tuple's description is a list: rebuilt, it would be another value.
                        raise SpaceError(f"parameter {n!r}: choice {c!r} is not a plain JSON "
                                         f"value, so its description cannot rebuild it")
                params[n] = Categorical(p["choices"], tree=p.get("tree"), when=when)
            else:
                raise SpaceError(f"unknown parameter type {t!r} for {n!r}")
        return cls(params)
