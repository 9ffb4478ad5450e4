"""A character-level GPT on real English prose: the reference documentation that ships with every
Python (the standard library's ``pydoc_data.topics``: 79 topics, about 465,000 characters).

    pip install -e ".[examples]"
    TOOLKIT_BACKEND=numba python examples/char_transformer.py     # about 2 minutes on 2 cores
    python examples/char_transformer.py --steps 200                 # a shorter run

Token and position embeddings (width 64, 64 characters of context), two pre-LayerNorm blocks
(causal self-attention, 4 heads of 16, then a GELU feed-forward of width 256), a final LayerNorm
and a softmax over the characters. Adam 3e-3, batches of 32 windows drawn at random positions of
the first 90 % of the text; the last 10 % is the validation text. Reports validation bits per
character, writes the curves, and prints a 300-character sample generated from a prompt (``--sample-length``).
"""

from __future__ import annotations

import argparse
import math
import pathlib
import time
from collections.abc import Iterator

import numpy as np

import toolkit
from toolkit import Adam, Dense, Dropout, Embedding, LayerNorm, MultiHeadAttention, PositionEmbedding, Residual, Sequential
from toolkit.plotting import plot_history

CONTEXT, WIDTH, HEADS, BLOCKS, BATCH = 64, 64, 4, 2, 32


def load_text() -> tuple[str, np.ndarray, np.ndarray, list[str]]:
    """(text, training ids, validation ids, alphabet): every topic in name order, split 90/10 by position."""
    from pydoc_data.topics import topics

    text = "\n\n".join(topics[name] for name in sorted(topics))
    alphabet = sorted(set(text))
    index = {char: i for i, char in enumerate(alphabet)}
    ids = np.array([index[char] for char in text], dtype=np.int64)
    split = int(0.9 * len(ids))
    return text, ids[:split], ids[split:], alphabet


def build(vocab: int, seed: int = 0, dropout: float = 0.0) -> Sequential:
    """The GPT: embeddings, ``BLOCKS`` pre-LayerNorm blocks, a softmax over the alphabet."""
    layers = [Embedding(vocab, WIDTH, input_length=CONTEXT), PositionEmbedding(CONTEXT)]
    for _ in range(BLOCKS):
        layers += [Residual([LayerNorm(), MultiHeadAttention(HEADS, WIDTH // HEADS, causal=True, dropout=dropout)]),
                   Residual([LayerNorm(), Dense(4 * WIDTH, activation="gelu"), Dense(WIDTH), Dropout(dropout)])]
    layers += [LayerNorm(), Dense(vocab, activation="softmax")]
    model = Sequential(layers, seed=seed)
    model.compile(loss="sparse_categorical_crossentropy", optimizer=Adam(lr=3e-3), metrics=["accuracy"])
    return model


def windows(ids: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inputs ids[s : s + CONTEXT] and targets shifted by one character, for each start s."""
    offsets = starts[:, None] + np.arange(CONTEXT)
    return ids[offsets], ids[offsets + 1]


def random_batches(ids: np.ndarray, steps: int, seed: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``steps`` batches of ``BATCH`` windows at random positions (the same ones for a given seed)."""
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        yield windows(ids, rng.integers(0, len(ids) - CONTEXT - 1, size=BATCH))


def validation_windows(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every whole, non-overlapping window of the validation text."""
    return windows(ids, np.arange(0, len(ids) - CONTEXT - 1, CONTEXT))


def generate(model: Sequential, prompt: np.ndarray, count: int, temperature: float, seed: int) -> np.ndarray:
    """``count`` ids sampled one at a time after ``prompt``. The model reads CONTEXT positions; a shorter
    context is padded on the right, which the causal mask makes invisible to the position read."""
    rng = np.random.default_rng(seed)
    ids = list(prompt)
    for _ in range(count):
        context = ids[-CONTEXT:]
        window = np.zeros((1, CONTEXT), dtype=np.int64)
        window[0, : len(context)] = context
        probabilities = np.asarray(model.backend.to_host(model.predict(window)))[0, len(context) - 1]
        logits = np.log(np.maximum(probabilities, 1e-30)) / temperature
        weights = np.exp(logits - logits.max())
        ids.append(int(rng.choice(len(weights), p=weights / weights.sum())))
    return np.array(ids[len(prompt):])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1500, help="training steps (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=10,
                        help="epochs, each steps/epochs steps and a validation pass (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and the batches (default: %(default)s)")
    parser.add_argument("--temperature", type=float, default=0.8, help="sampling temperature (default: %(default)s)")
    parser.add_argument("--prompt", default="The ", help="start of the generated sample (default: %(default)r)")
    parser.add_argument("--sample-length", type=int, default=300,
                        help="characters generated after the prompt (default: %(default)s)")
    parser.add_argument("--verbose", type=int, default=1, help="0 silent, 1 progress bar (default: %(default)s)")
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path(__file__).parent / "output",
                        help="folder for the PNG (default: %(default)s)")
    args = parser.parse_args()

    text, train_ids, val_ids, alphabet = load_text()
    model = build(len(alphabet), args.seed)
    x_val, y_val = validation_windows(val_ids)
    print(f"backend: {toolkit.get_backend().name}; {len(text):,} characters of pydoc_data.topics, "
          f"{len(alphabet)} distinct; {len(train_ids):,} for training, {len(val_ids):,} for validation")
    steps_per_epoch = max(1, args.steps // args.epochs)
    started = time.perf_counter()
    history = model.fit(random_batches(train_ids, steps_per_epoch * args.epochs, args.seed),
                        epochs=args.epochs, steps_per_epoch=steps_per_epoch, validation_data=(x_val, y_val),
                        verbose=args.verbose)
    seconds = time.perf_counter() - started
    bits = history["val_loss"][-1] / math.log(2)  # the loss is in nats per character
    args.out.mkdir(parents=True, exist_ok=True)
    plot_history(history, args.out / "char_transformer_curves.png")
    prompt = np.array([alphabet.index(char) for char in args.prompt], dtype=np.int64)
    sample = "".join(alphabet[i] for i in generate(model, prompt, args.sample_length, args.temperature, args.seed))
    print(f"validation: {bits:.3f} bits per character, accuracy {history['val_accuracy'][-1]:.3f}; "
          f"{steps_per_epoch * args.epochs} steps in {seconds:.1f}s; wrote {args.out / 'char_transformer_curves.png'}")
    print(f"sample (temperature {args.temperature}):\n{args.prompt}{sample}")


if __name__ == "__main__":
    main()
