"""Control over the training step: gradient clipping, per-step learning-rate schedules and per-batch
callbacks, each against its PyTorch counterpart (float64 ≤ 1e-12 per step) on every backend."""

import numpy as np
import pytest

import toolkit
from tests.conftest import to_numpy
from tests.helpers import relative_error
from toolkit import Dense, InputError, Sequential
from toolkit.callbacks import Callback
from toolkit.schedules import WarmupCosine

TORCH_OPTIMIZERS = {"sgd": ("SGD", {"momentum": 0.9}), "adam": ("Adam", {})}


def _pair(optimizer, **settings):
    """A toolkit MLP and the same torch network (weights copied), with the same optimizer."""
    torch = pytest.importorskip("torch")
    model = Sequential([Dense(7, activation="tanh", input_dim=5), Dense(3, activation="softmax")], dtype="float64",
                       seed=2)
    name, torch_settings = TORCH_OPTIMIZERS[optimizer]
    lr = settings.pop("lr", 0.1)
    model.compile(loss="categorical_crossentropy",
                  optimizer=getattr(toolkit, name)(lr=lr, **torch_settings, **settings))
    net = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3)).double()
    toolkit.store_torch_weights(model, net)
    torch_lr = 1.0 if callable(lr) else lr  # a schedule multiplies 1.0 through LambdaLR
    return torch, model, net, getattr(torch.optim, name)(net.parameters(), lr=torch_lr, **torch_settings)


def _batches(rng, steps=4):
    return [(rng.normal(size=(6, 5)) * 3, rng.integers(0, 3, size=6)) for _ in range(steps)]


def _torch_step(torch, net, optimizer, x, y, clip=None, scheduler=None):
    loss = torch.nn.functional.cross_entropy(net(torch.tensor(x)), torch.tensor(y))
    optimizer.zero_grad()
    loss.backward()
    if clip is not None:
        clip()
    optimizer.step()
    if scheduler is not None:
        scheduler.step()


def _assert_same_weights(backend, model, net):
    ours = model.get_weights()
    theirs = {"0.W": net[0].weight, "0.b": net[0].bias, "1.W": net[2].weight, "1.b": net[2].bias}
    for name, tensor in theirs.items():
        value = tensor.detach().numpy()
        assert relative_error(ours[name], value.T if name.endswith("W") else value) <= 1e-12, name


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("kind,limit", [("clipvalue", 0.02), ("global_clipnorm", 0.05), ("clipnorm", 0.03)])
def test_clipping_equals_torch_clip_then_step(backend, rng, optimizer, kind, limit):
    torch, model, net, torch_optimizer = _pair(optimizer, **{kind: limit})
    params = list(net.parameters())
    clip = {"clipvalue": lambda: torch.nn.utils.clip_grad_value_(params, limit),
            "global_clipnorm": lambda: torch.nn.utils.clip_grad_norm_(params, limit),
            "clipnorm": lambda: [torch.nn.utils.clip_grad_norm_([p], limit) for p in params]}[kind]
    for x, y in _batches(rng):
        model.train_step(x, y)
        _torch_step(torch, net, torch_optimizer, x, y, clip)
        _assert_same_weights(backend, model, net)


def test_clipping_acts_only_above_the_limit(numpy_backend, rng):
    """A limit above every gradient's norm changes nothing: the same weights as no clipping at all."""
    x, y = rng.normal(size=(8, 5)), rng.integers(0, 3, size=8)
    runs = []
    for settings in ({}, {"global_clipnorm": 1e6}, {"clipnorm": 1e6}, {"clipvalue": 1e6}):
        model = Sequential([Dense(4, activation="tanh", input_dim=5), Dense(3, activation="softmax")], dtype="float64")
        model.compile(loss="categorical_crossentropy", optimizer=toolkit.SGD(lr=0.1, **settings))
        model.train_step(x, y)
        runs.append(model.get_weights())
    for run in runs[1:]:
        for name, value in run.items():
            np.testing.assert_array_equal(value, runs[0][name])


@pytest.mark.parametrize("settings,message", [
    ({"clipnorm": 0.0}, r"clipnorm must be > 0; got 0.0"),
    ({"global_clipnorm": -1.0}, r"global_clipnorm must be > 0"),
    ({"clipvalue": float("nan")}, r"clipvalue must be a finite number"),
    ({"clipnorm": 1.0, "clipvalue": 1.0}, r"give one of clipnorm, global_clipnorm and clipvalue, not clipnorm and clipvalue"),
])
def test_bad_clipping_settings(settings, message):
    with pytest.raises(InputError, match=message):
        toolkit.Adam(**settings)


def test_a_per_step_schedule_equals_torch_lambda_lr(backend, rng):
    schedule = WarmupCosine(lr=0.05, warmup_steps=2, total_steps=5, min_lr=0.001)
    torch, model, net, torch_optimizer = _pair("adam", lr=schedule)
    scheduler = torch.optim.lr_scheduler.LambdaLR(torch_optimizer, schedule)
    seen = []
    for x, y in _batches(rng, steps=6):
        model.train_step(x, y)
        seen.append(model.optimizer.lr)
        _torch_step(torch, net, torch_optimizer, x, y, scheduler=scheduler)
        _assert_same_weights(backend, model, net)
    assert seen == [schedule(step) for step in range(6)]
    assert seen[0] == 0.025 and seen[1] == 0.05 and seen[-1] == 0.001


def test_a_schedule_survives_a_checkpoint(numpy_backend, rng, tmp_path):
    schedule = WarmupCosine(lr=0.05, warmup_steps=2, total_steps=10)
    batches = _batches(rng, steps=5)

    def model_with_schedule():
        model = Sequential([Dense(4, activation="tanh", input_dim=5), Dense(3, activation="softmax")], dtype="float64")
        model.compile(loss="categorical_crossentropy", optimizer=toolkit.Adam(lr=schedule))
        return model

    whole = model_with_schedule()
    for x, y in batches:
        whole.train_step(x, y)
    first = model_with_schedule()
    for x, y in batches[:3]:
        first.train_step(x, y)
    toolkit.save(first, tmp_path / "scheduled.safetensors")
    resumed = toolkit.load(tmp_path / "scheduled.safetensors")
    assert resumed.optimizer.schedule == schedule
    for x, y in batches[3:]:
        resumed.train_step(x, y)
    for name, value in whole.get_weights().items():
        np.testing.assert_array_equal(resumed.get_weights()[name], value)


def test_a_schedule_that_is_a_plain_function_cannot_be_saved_and_says_so(numpy_backend, tmp_path):
    model = Sequential([Dense(2, input_dim=3)])
    model.compile(loss="mse", optimizer=toolkit.SGD(lr=lambda step: 0.1 / (1 + step)))
    with pytest.raises(InputError, match=r"plain callable, which a checkpoint cannot record; use a toolkit.schedules"):
        toolkit.save(model, tmp_path / "m.safetensors")
    toolkit.save(model, tmp_path / "m.safetensors", include_optimizer=False)


class _Recorder(Callback):
    def __init__(self, stop_at=None):
        self.events, self.losses, self.stop_at = [], [], stop_at

    def on_train_batch_begin(self, batch):
        self.events.append(("begin", batch))

    def on_train_batch_end(self, batch, logs):
        self.events.append(("end", batch))
        self.losses.append(logs["loss"])  # kept as arrays: read after training
        if batch == self.stop_at:
            self.model.stop_training = True


def test_per_batch_callbacks_see_every_step_and_its_loss_as_an_array(backend, rng):
    model = Sequential([Dense(4, activation="tanh", input_dim=5), Dense(3, activation="softmax")], dtype="float64")
    model.compile(loss="categorical_crossentropy", optimizer="adam")
    x, y = rng.normal(size=(20, 5)), rng.integers(0, 3, size=20)
    recorder = _Recorder()
    history = model.fit(x, y, epochs=2, batch_size=8, shuffle=False, callbacks=[recorder], verbose=0)
    assert recorder.events == [(kind, b) for _ in range(2) for b in range(3) for kind in ("begin", "end")]
    assert all(getattr(loss, "shape", None) == () for loss in recorder.losses)  # arrays (NumPy: 0-d scalars)
    first_epoch = [float(loss) for loss in recorder.losses[:3]]
    assert abs(np.average(first_epoch, weights=[8, 8, 4]) - history["loss"][0]) <= 1e-12


def test_stop_training_from_a_batch_callback_stops_after_that_step(numpy_backend, rng):
    model = Sequential([Dense(3, activation="softmax", input_dim=5)], dtype="float64")
    model.compile(loss="categorical_crossentropy")
    recorder = _Recorder(stop_at=1)
    model.fit(rng.normal(size=(40, 5)), rng.integers(0, 3, size=40), epochs=3, batch_size=8, callbacks=[recorder],
              verbose=0)
    assert recorder.events[-1] == ("end", 1) and model.optimizer.iterations == 2


def test_the_predicted_values_are_the_torch_ones_after_training(backend, rng):
    """The clipped, scheduled run ends where torch's ends: predictions too, not only weights."""
    torch, model, net, torch_optimizer = _pair("sgd", global_clipnorm=0.1)
    for x, y in _batches(rng):
        model.train_step(x, y)
        _torch_step(torch, net, torch_optimizer, x, y, lambda: torch.nn.utils.clip_grad_norm_(net.parameters(), 0.1))
    x = rng.normal(size=(4, 5))
    expected = torch.softmax(net(torch.tensor(x)), dim=1).detach().numpy()
    np.testing.assert_allclose(to_numpy(backend, model.predict(x)), expected, rtol=1e-12, atol=1e-13)


# -- freezing -----------------------------------------------------------------------------------

@pytest.mark.parametrize("frozen", ["first", "last"])
def test_freezing_equals_torch_requires_grad_false(backend, rng, frozen):
    """AdamW (whose decoupled decay would shrink any parameter it touched): the frozen layer stays
    bitwise as it was, the others follow torch with the same layer frozen."""
    torch, model, net, _ = _pair("adam")
    model.compile(loss="categorical_crossentropy", optimizer=toolkit.AdamW(lr=0.1))
    index, module = (0, net[0]) if frozen == "first" else (1, net[2])
    model.layers[index].trainable = False
    module.requires_grad_(False)
    torch_optimizer = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=0.1)
    before = model.get_weights()
    for x, y in _batches(rng):
        model.train_step(x, y)
        _torch_step(torch, net, torch_optimizer, x, y)
        _assert_same_weights(backend, model, net)
    for name in (f"{index}.W", f"{index}.b"):
        np.testing.assert_array_equal(model.get_weights()[name], before[name])
    state = model.optimizer.state["m"]
    segment = model.table.by_key[f"{index}.W"]
    assert not np.any(to_numpy(backend, state)[segment.offset : segment.offset + segment.size])  # no moments


def test_a_frozen_block_and_its_record_in_a_checkpoint(numpy_backend, rng, tmp_path):
    from toolkit import LayerNorm, Residual

    model = Sequential([Dense(4, activation="tanh", input_dim=3), Residual([Dense(4), LayerNorm()]), Dense(1)])
    model.compile(loss="mse", optimizer="adam")
    model.layers[1].trainable = False  # a block freezes the layers in it
    assert [layer.trainable for layer in model.layers[1].layers] == [False, False]
    assert model.summary(print_fn=None).splitlines()[-1] == "Total params: 49 (trainable: 21, non-trainable: 28)"
    toolkit.save(model, tmp_path / "frozen.safetensors")
    restored = toolkit.load(tmp_path / "frozen.safetensors")
    assert [layer.trainable for layer in restored.layers] == [True, False, True]
    before = restored.get_weights()
    restored.fit(rng.normal(size=(8, 3)), rng.normal(size=(8, 1)), epochs=2, verbose=0)
    assert all(np.array_equal(restored.get_weights()[k], before[k]) for k in ("1.0.W", "1.0.b", "1.1.gamma", "1.1.beta"))
    assert not np.array_equal(restored.get_weights()["0.W"], before["0.W"])


def test_freezing_every_layer_is_refused_before_training(numpy_backend, rng):
    model = Sequential([Dense(2, input_dim=3)])
    model.compile(loss="mse")
    model.layers[0].trainable = False
    with pytest.raises(InputError, match=r"every layer is frozen \(trainable=False\), so fit would change nothing"):
        model.fit(rng.normal(size=(4, 3)), rng.normal(size=(4, 2)), verbose=0)
    with pytest.raises(InputError, match=r"trainable must be True or False"):
        model.layers[0].trainable = "no"


# -- gradient accumulation ----------------------------------------------------------------------

@pytest.mark.parametrize("rows,batch,steps", [(24, 4, 3), (23, 5, 2)], ids=["even", "shorter-last-group"])
def test_accumulated_batches_equal_one_large_batch(backend, rng, rows, batch, steps):
    """k micro-batches of b rows, with dropout, equal batches of k·b rows (the last group shorter
    when the epoch's rows run out), over several updates (float64 ≤ 1e-10)."""
    from toolkit import Dropout

    x, y = rng.normal(size=(rows, 5)), rng.integers(0, 3, size=rows)

    def trained(accumulate, batch_size):
        model = Sequential([Dense(8, activation="tanh", input_dim=5), Dropout(0.3), Dense(3, activation="softmax")],
                           dtype="float64", seed=1)
        model.compile(loss="categorical_crossentropy", optimizer="adam", gradient_accumulation_steps=accumulate)
        history = model.fit(x, y, epochs=3, batch_size=batch_size, shuffle=False, verbose=0)
        return model, history

    large, large_history = trained(1, batch * steps)
    small, small_history = trained(steps, batch)
    assert small.optimizer.iterations == large.optimizer.iterations == 3 * -(-rows // (batch * steps))
    assert small.random_step == large.random_step
    for name, value in large.get_weights().items():
        assert relative_error(small.get_weights()[name], value) <= 1e-10, name
    np.testing.assert_allclose(small_history["loss"], large_history["loss"], rtol=1e-10)


def test_bad_accumulation_settings(numpy_backend):
    model = Sequential([Dense(2, input_dim=3)])
    with pytest.raises(InputError, match=r"gradient_accumulation_steps must be an integer ≥ 1; got 0"):
        model.compile(loss="mse", gradient_accumulation_steps=0)


def test_freezing_holds_across_a_new_compile(numpy_backend, rng):
    model = Sequential([Dense(3, activation="tanh", input_dim=4), Dense(2)])
    model.compile(loss="mse", optimizer="adam")
    model.layers[0].trainable = False
    x, y = rng.normal(size=(6, 4)), rng.normal(size=(6, 2))
    model.fit(x, y, verbose=0)
    before = model.get_weights()["0.W"]
    model.compile(loss="mse", optimizer="sgd")  # a new optimizer must learn the frozen layers too
    model.fit(x, y, verbose=0)
    np.testing.assert_array_equal(model.get_weights()["0.W"], before)


@pytest.mark.parametrize("clipping", [("global_clipnorm", 1.0), ("global_clipnorm", 1e6), ("clipnorm", 0.5),
                                      ("clipvalue", 0.05)])
def test_each_backends_clipping_equals_the_reference(backend, clipping):
    """``Backend.clip_gradients`` (a hot op: NumPy and numba reuse a buffer, and skip the copy when nothing
    clips) against ``toolkit.ops.optim.clip_gradients``, with one segment clipped and one not."""
    from toolkit.ops.optim import clip_gradients

    active = toolkit.get_backend()
    values = np.random.default_rng(3).normal(size=40) * np.r_[np.full(30, 1.0), np.full(10, 1e-3)]
    grads = active.asarray(values, dtype=active.dtype("float64"))
    segments = ((0, 30), (30, 10))
    def clipped(result):  # (g, s) stands for s·g: a global norm's factor is left to the update
        grads, scale = result
        return np.asarray(active.to_host(grads)) * float(scale)

    expected = clipped(clip_gradients(grads, clipping, segments, active.xp))
    if clipping[0] == "global_clipnorm":  # by hand: the factor of torch.nn.utils.clip_grad_norm_
        factor = min(1.0, clipping[1] / (np.sqrt(np.sum(values**2)) + 1e-6))
        np.testing.assert_allclose(expected, values * factor, rtol=1e-15, atol=0)
    np.testing.assert_allclose(clipped(active.clip_gradients(grads, clipping, segments)), expected, rtol=1e-15, atol=0)
    np.testing.assert_array_equal(np.asarray(active.to_host(grads)), values)  # the gradients themselves untouched


# -- steps per execution -------------------------------------------------------------------------

def _grouped_model(steps_per_execution, controls=False):
    """Dropout, BatchNorm, Adam with a schedule (each step of a group has its own learning rate); with
    ``controls``, global-norm clipping and a frozen first layer too."""
    from toolkit import Adam, BatchNorm, Dropout

    model = Sequential([Dense(8, activation="tanh", input_dim=5), BatchNorm(), Dropout(0.3),
                        Dense(3, activation="softmax")], dtype="float64", seed=4)
    clipping = {"global_clipnorm": 0.05} if controls else {}
    model.compile(loss="categorical_crossentropy", optimizer=Adam(lr=WarmupCosine(lr=0.05, warmup_steps=3,
                                                                                  total_steps=20), **clipping),
                  metrics=["accuracy"], steps_per_execution=steps_per_execution)
    model.layers[0].trainable = not controls
    return model


def _count_programs(model):
    """How many times fit ran a group of steps as one program (None: the backend has no such program)."""
    step = model._engine_for_training().step
    if not hasattr(step, "many"):
        return None
    calls, many = [], step.many
    step.many = lambda *args, **kwargs: calls.append(1) or many(*args, **kwargs)
    return calls


@pytest.mark.parametrize("source,controls", [("arrays", False), ("dataset", True)],
                         ids=["arrays", "dataset-clipped-frozen"])
@pytest.mark.parametrize("rows,groups,steps", [(26, 2, 14), (32, 4, 16)], ids=["ends-alone", "ends-in-a-group"])
def test_steps_in_one_program_equal_steps_one_by_one(backend, rng, rows, groups, steps, source, controls):
    """compile(steps_per_execution=4) with dropout, BatchNorm, a schedule and a metric: the same weights,
    layer state, optimizer state, history and last gradients as single steps (float64 ≤ 1e-10). In
    batches of 4, 26 rows are a group, two single steps (a group must be whole) and a short batch;
    32 rows are two groups, the last gradients those of a group's last step. Arrays are shuffled (a
    group takes its rows at once); a Dataset's batches are stacked; clipping and freezing are in the program."""
    from toolkit.data import Dataset

    x, y = rng.normal(size=(rows, 5)), rng.integers(0, 3, size=rows)
    data = (Dataset(x, np.eye(3)[y]),) if source == "dataset" else (x, y)
    single, grouped = _grouped_model(1, controls), _grouped_model(4, controls)
    calls = _count_programs(grouped)
    single_history = single.fit(*data, epochs=2, batch_size=4, seed=3, verbose=0)
    grouped_history = grouped.fit(*data, epochs=2, batch_size=4, seed=3, verbose=0)
    if calls is not None:
        assert len(calls) == groups
    assert grouped.optimizer.iterations == single.optimizer.iterations == steps
    assert grouped.random_step == single.random_step
    for name, value in single.get_weights().items():
        assert relative_error(grouped.get_weights()[name], value) <= 1e-10, name
    for ours, theirs in [(grouped.flat_state, single.flat_state), (grouped.flat_grads, single.flat_grads),
                         *[(grouped.optimizer.state[name], value) for name, value in single.optimizer.state.items()]]:
        assert relative_error(to_numpy(backend, ours), to_numpy(backend, theirs)) <= 1e-10
    for key in ("loss", "accuracy"):
        np.testing.assert_allclose(grouped_history[key], single_history[key], rtol=1e-10)


@pytest.mark.parametrize("deferred", [False, True], ids=["each-loss-read", "block-read"])
def test_a_group_that_diverges_stops_where_single_steps_stop(backend, rng, monkeypatch, deferred):
    """A non-finite loss inside a group: the same TrainingDiverged message and the same kept weights as
    with single steps, whether the guard reads every loss or (as on a GPU) a block's sum."""
    from toolkit import SGD, Dropout

    monkeypatch.setattr(backend, "reads_are_cheap", not deferred)
    x, y = rng.normal(size=(64, 5)), rng.normal(size=(64, 1))

    def diverged(steps_per_execution):
        model = Sequential([Dense(8, input_dim=5), Dropout(0.3), Dense(1)], dtype="float64", seed=4)
        model.compile(loss="mse", optimizer=SGD(lr=1.0), steps_per_execution=steps_per_execution)
        with pytest.raises(toolkit.TrainingDiverged) as caught:
            model.fit(x, y, epochs=3, batch_size=4, shuffle=False, verbose=0)
        return model, str(caught.value)

    single, single_message = diverged(1)
    grouped, grouped_message = diverged(4)
    assert grouped_message == single_message
    assert ("between batch 1 and the epoch's end" if deferred else "at epoch 1, batch 7;") in single_message
    for name, value in single.get_weights().items():
        assert relative_error(grouped.get_weights()[name], value) <= 1e-10, name
    assert grouped.optimizer.iterations == single.optimizer.iterations


def test_batch_callbacks_see_every_step_of_a_grouped_fit(backend, rng):
    class Seen(Callback):
        def __init__(self):
            super().__init__()
            self.batches = []

        def on_train_batch_end(self, batch, logs=None):
            self.batches.append(batch)

    model, seen = _grouped_model(4), Seen()
    model.fit(rng.normal(size=(20, 5)), rng.integers(0, 3, size=20), epochs=1, batch_size=4, callbacks=[seen],
              verbose=0)
    assert seen.batches == [0, 1, 2, 3, 4]


def test_bad_steps_per_execution(numpy_backend):
    with pytest.raises(InputError, match=r"steps_per_execution must be an integer ≥ 1; got 0"):
        Sequential([Dense(2, input_dim=3)]).compile(loss="mse", steps_per_execution=0)
