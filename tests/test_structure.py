"""The architecture as the code states it (issue #25): the network apart from its training, no
import circles among ``toolkit/`` modules, and the training side reusable by another container."""

import ast
import pathlib

import numpy as np

from toolkit import Dense, Sequential
from toolkit.network import Network
from toolkit.trainer import Trainer

TOOLKIT = pathlib.Path(__file__).resolve().parent.parent / "toolkit"


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(TOOLKIT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: pathlib.Path, modules: set[str]) -> set[str]:
    """The toolkit modules ``path`` imports at run time, at the top or inside functions (lazy
    imports count); imports under ``if TYPE_CHECKING:`` are for type checkers only and never run."""
    tree = ast.parse(path.read_text())
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    type_only = {id(node) for block in ast.walk(tree) if isinstance(block, ast.If)
                 and getattr(block.test, "id", None) == "TYPE_CHECKING" for node in ast.walk(block)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names = [f"{base}.{alias.name}" for alias in node.names]
            names = [name if name in modules else base for name in names]
        else:
            continue
        found.update(name for name in names if name in modules)
    found.discard(_module_name(path))
    return found


def import_graph() -> dict[str, set[str]]:
    files = list(TOOLKIT.rglob("*.py"))
    modules = {_module_name(path) for path in files}
    return {_module_name(path): _imports(path, modules) for path in files}


def _circle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle, as the list of modules around it, or None."""
    state: dict[str, int] = {}

    def visit(module: str, trail: list[str]) -> list[str] | None:
        state[module] = 1
        for target in sorted(graph.get(module, ())):
            if target == "toolkit":  # the package's __init__ re-exports; importing it is the public API
                continue
            if state.get(target) == 1:
                return [*trail[trail.index(target):], target] if target in trail else [module, target]
            if target not in state:
                found = visit(target, [*trail, target])
                if found:
                    return found
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state:
            found = visit(module, [module])
            if found:
                return found
    return None


def test_no_import_circles_among_toolkit_modules():
    assert _circle(import_graph()) is None, " -> ".join(_circle(import_graph()))


def test_the_circle_finder_finds_a_planted_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _circle(graph) == ["a", "b", "c", "a"]


def test_the_network_side_knows_nothing_of_training():
    graph = import_graph()
    training_side = {"toolkit.trainer", "toolkit.training", "toolkit.callbacks", "toolkit.feeders", "toolkit.model",
                     "toolkit.optimizers", "toolkit.metrics", "toolkit.distributed"}
    for module in ("toolkit.network", "toolkit.engine", "toolkit.interop", "toolkit.saving", "toolkit.layers"):
        assert not graph[module] & (training_side - ({"toolkit.optimizers"} if module == "toolkit.saving" else set())), \
            (module, graph[module] & training_side)


class _Tower(Trainer, Network):
    """A second container, a test double: a tower of equal tanh layers under one linear output,
    built from two numbers. It gets compile, fit, evaluate and predict from ``Trainer`` unchanged."""

    def __init__(self, width: int, height: int, inputs: int, **options):
        super().__init__([Dense(width, activation="tanh") for _ in range(height)] + [Dense(1)], input_dim=inputs,
                         **options)


def test_another_container_reuses_the_training_side_unchanged(backend, rng):
    x, y = rng.normal(size=(40, 3)), rng.normal(size=(40, 1))
    tower = _Tower(5, 2, 3, dtype="float64", seed=4)
    same = Sequential([Dense(5, activation="tanh"), Dense(5, activation="tanh"), Dense(1)], input_dim=3,
                      dtype="float64", seed=4)
    for model in (tower, same):
        model.compile(loss="mse", optimizer="adam", metrics=["mae"])
    tower_history = tower.fit(x, y, epochs=3, batch_size=8, validation_split=0.25, verbose=0)
    same_history = same.fit(x, y, epochs=3, batch_size=8, validation_split=0.25, verbose=0)
    assert tower_history.history == same_history.history
    assert tower.evaluate(x, y) == same.evaluate(x, y)
    np.testing.assert_array_equal(np.asarray(tower.backend.to_host(tower.predict(x))),
                                  np.asarray(same.backend.to_host(same.predict(x))))
    assert tower.summary(print_fn=None).startswith('_Tower on backend')


def test_the_one_door_takes_validation_data_as_a_tuple_or_a_list(numpy_backend, rng):
    x, y = rng.normal(size=(20, 3)), rng.integers(0, 2, size=20)
    histories = []
    for pack in (tuple, list):
        model = Sequential([Dense(2, activation="softmax", input_dim=3)], dtype="float64", seed=1)
        model.compile(loss="categorical_crossentropy", metrics=["accuracy"])
        histories.append(model.fit(x, y, epochs=2, validation_data=pack([x[:8], y[:8]]), verbose=0).history)
    assert histories[0] == histories[1] and len(histories[0]["val_accuracy"]) == 2
