"""ABMIL, metrics, splits and the k-fold training loop, on tiny in-memory bags."""

from __future__ import annotations

import dataclasses
import math
import re
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from lrmil.mil.attention import ABMIL, ABMILOutput, load_mil, save_mil
from lrmil.mil.bags import Bag
from lrmil.mil.config import ABMILConfig, MILConfig
from lrmil.mil.metrics import metrics_from_table, predictions_table, slide_metrics
from lrmil.mil.splits import fold_roles, labels_of, read_splits
from lrmil.mil.train import ce_loss, fit, predict_bags
from tests.test_store import damaged_feature_files

DIM = 8


def assign_folds(table: pd.DataFrame, k: int, seed: int) -> pd.DataFrame:
    """Stratified fold numbers 0..k-1 for a (slide_id, label) table: each class is dealt round-robin."""
    rng = np.random.default_rng(seed)
    folds = np.zeros(len(table), dtype=int)
    for _, rows in table.groupby("label").groups.items():
        order = rng.permutation(np.asarray(rows))
        folds[table.index.get_indexer(order)] = (np.arange(len(order)) + rng.integers(k)) % k
    return table.assign(fold=folds)


def make_bags(count: int, seed: int, n: int = 20) -> list[Bag]:
    """Positive bags hide 3 'signal' instances (feature 0 = 3) among noise; negatives have none."""
    g = torch.Generator().manual_seed(seed)
    bags = []
    for i in range(count):
        x = torch.randn(n, DIM, generator=g) * 0.5
        label = i % 2
        if label:
            x[:3, 0] += 3.0
        bags.append(Bag(f"s{seed}_{i}", label, i % 4, x, torch.zeros(n, 0, dtype=torch.long)))
    return bags


def test_abmil_output_is_typed_and_attention_is_a_distribution():
    model = ABMIL(ABMILConfig(in_dim=DIM, hidden_dim=16, attn_dim=8, labels=("a", "b", "c"))).eval()
    out = model(torch.randn(7, DIM))
    assert isinstance(out, ABMILOutput)
    assert out.logits.shape == (3,) and out.attention.shape == (7,) and out.instances.shape == (7, 16)
    assert torch.allclose(out.attention.sum(), torch.tensor(1.0))
    assert model(torch.randn(1, DIM)).attention.item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="non-empty bag"):
        model(torch.zeros(0, DIM))


def test_save_load_round_trip_rebuilds_the_same_model(tmp_path):
    cfg = ABMILConfig(in_dim=DIM, hidden_dim=16, labels=("neg", "pos"), encoder="enc", magnification=5.0)
    model = ABMIL(cfg).eval()
    save_mil(tmp_path / "m.safetensors", model, {"fold": 2})
    loaded = load_mil(tmp_path / "m.safetensors")
    assert loaded.cfg == cfg
    x = torch.randn(5, DIM)
    assert torch.allclose(model(x).logits, loaded(x).logits)


def test_a_weights_file_missing_a_tensor_is_refused_not_filled_with_random_weights(tmp_path):
    """A file cut down (or written by other code) that lacks the head must not load as a model whose head is fresh
    random numbers: its predictions would look like any other's."""
    from export.artifact import save_weights

    model = ABMIL(ABMILConfig(in_dim=DIM, hidden_dim=16, labels=("neg", "pos")))
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("head.")}
    save_weights(tmp_path / "m.safetensors", state, model.cfg.to_dict())
    with pytest.raises(RuntimeError, match="head"):
        load_mil(tmp_path / "m.safetensors")


def test_attention_is_the_gated_score_softmaxed_over_the_patches():
    """score_i = w^T (tanh(V h_i) * sigmoid(U h_i)), softmax over the bag's patches, pooled as their weighted
    mean: the formula saved models were trained with, and what the heatmap reads."""
    torch.manual_seed(0)
    model = ABMIL(ABMILConfig(in_dim=DIM, hidden_dim=16, attn_dim=8, labels=("a", "b"))).eval()
    features = torch.randn(6, DIM)
    out = model(features)
    h = out.instances
    v, u, w = model.attend.value[0], model.attend.gate[0], model.attend.score
    expected = torch.softmax(w(torch.tanh(v(h)) * torch.sigmoid(u(h))).squeeze(-1), dim=0)
    assert torch.allclose(out.attention, expected, atol=1e-6)
    assert torch.allclose(out.logits, model.head(expected @ h), atol=1e-6)


def test_slide_metrics_binary_and_multiclass():
    y = np.array([0, 0, 1, 1])
    probs = np.array([[0.9, 0.1], [0.4, 0.6], [0.3, 0.7], [0.8, 0.2]])
    m = slide_metrics(y, probs)
    assert m["auc"] == pytest.approx(0.75)  # pos>neg pairs: 0.7>0.1, 0.7>0.6, 0.2>0.1; not 0.2>0.6
    assert m["accuracy"] == pytest.approx(0.5)
    assert m["balanced_accuracy"] == pytest.approx(0.5)
    y3 = np.array([0, 1, 2, 2])
    p3 = np.eye(3)[y3] * 0.8 + 0.2 / 3
    m3 = slide_metrics(y3, p3)
    assert m3["auc"] == pytest.approx(1.0) and m3["f1_weighted"] == pytest.approx(1.0)
    # A fold of a 3-class problem holding only two classes: macro AUC over those two, not NaN.
    p_missing = np.array([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.5, 0.4, 0.1], [0.1, 0.2, 0.7]])
    assert slide_metrics(np.array([0, 1, 1, 0]), p_missing)["auc"] == pytest.approx((0.5 + 1.0) / 2)  # class 0, 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one class present (a small fold): no sklearn warning either
        one_class = slide_metrics(np.array([1, 1]), probs[:2])
    assert math.isnan(one_class["auc"]) and one_class["balanced_accuracy"] == pytest.approx(0.5)


def test_predictions_table_round_trips_through_metrics():
    probs = np.array([[0.2, 0.8], [0.7, 0.3], [0.4, 0.6]])
    table = predictions_table(["a", "b", "c"], np.array([1, 0, 0]), probs, ("neg", "pos"), [0, 0, 1])
    assert list(table.columns) == ["slide_id", "fold", "label", "predicted", "p_neg", "p_pos"]
    assert table["predicted"].tolist() == ["pos", "neg", "pos"]
    assert metrics_from_table(table, ("neg", "pos"))["accuracy"] == pytest.approx(2 / 3)


def test_fold_roles_are_disjoint_and_validation_is_the_next_fold(tmp_path):
    table = pd.DataFrame({"slide_id": [f"s{i}" for i in range(20)], "label": ["x"] * 10 + ["y"] * 10})
    folded = assign_folds(table, k=5, seed=1)
    assert (folded.groupby(["fold", "label"]).size() == 2).all()
    roles = fold_roles(folded, test_fold=4)
    assert set(folded["slide_id"][folded["fold"] == 0]) == set(roles["val"])
    assert sum(map(len, roles.values())) == 20 and not set(roles["train"]) & set(roles["test"])
    path = tmp_path / "splits.csv"
    folded.to_csv(path, index=False)
    assert labels_of(read_splits(path), path) == ("x", "y")
    folded.drop(columns="fold").to_csv(path, index=False)
    with pytest.raises(ValueError, match="missing column"):
        read_splits(path)


def test_fit_learns_a_hidden_instance_signal_and_attends_to_it():
    cfg = MILConfig(epochs=8, patience=8, lr=1e-2, seed=0)
    torch.manual_seed(0)
    model = ABMIL(ABMILConfig(in_dim=DIM, hidden_dim=16, attn_dim=8, drop_rate=0.0))
    before = slide_metrics(np.array([b.label for b in make_bags(16, 2)]), predict_bags(model, make_bags(16, 2)))
    model = fit(model, make_bags(24, 0), make_bags(8, 1), ce_loss, cfg)
    test = make_bags(16, 2)
    after = slide_metrics(np.array([b.label for b in test]), predict_bags(model, test))
    assert before["accuracy"] < 0.75  # untrained: near chance on these balanced bags
    assert after["auc"] == pytest.approx(1.0) and after["accuracy"] >= 0.9
    positive = test[1]
    with torch.no_grad():
        attention = model(positive.features).attention
    assert attention[:3].sum() > 0.5  # 3 of 20 instances carry the signal


def test_fit_stops_after_patience_epochs_without_improvement():
    calls = []

    def counting_loss(model, bag):
        calls.append(bag.slide_id)
        return ce_loss(model, bag)

    train = make_bags(6, 0)
    cfg = dataclasses.replace(MILConfig(), epochs=20, patience=2, lr=0.0, seed=0)  # lr 0: never improves
    fit(ABMIL(ABMILConfig(in_dim=DIM, hidden_dim=16)), train, make_bags(4, 1), counting_loss, cfg)
    assert len(calls) == 3 * len(train)  # epoch 1 sets the best, epochs 2-3 are stale


def test_bags_from_two_encoders_weights_are_refused_naming_both(tmp_path):
    """A re-extraction of some slides with other weights into the same folder: same width, other features."""
    from lrmil.mil.bags import load_bags
    from lrmil.store import FeatureFile, write_features

    rows = []
    for i, sha in enumerate(["a" * 64] * 3 + ["b" * 64]):
        write_features(tmp_path / f"s{i}.h5", FeatureFile(
            np.zeros((4, 2), np.int64), np.ones((4, DIM), np.float32), np.zeros((4, 0), np.int64), 1024, 256, 20.0,
            0.5, encoder="lrmil_vit_tiny", weights_sha256=sha, slide_id=f"s{i}"))
        rows.append((f"s{i}", "tumour", 0))
    splits = pd.DataFrame(rows, columns=["slide_id", "label", "fold"])
    assert len(load_bags(tmp_path, splits.iloc[:3], ("benign", "tumour"))) == 3
    with pytest.raises(ValueError,
                       match=r"weights aaaaaaaa at 20x, 8-d: 3 slide\(s\), e.g. s0; .*weights bbbbbbbb .* e.g. s3"):
        load_bags(tmp_path, splits, ("benign", "tumour"))


def test_out_of_fold_predictions_follow_the_slides_through_store_splits_and_folds(tmp_path):
    """Guards the bookkeeping behind the pooled AUC: when the label is a plain function of each bag's
    mean feature, every test fold must score ~1 (an inverted fold means slides, labels or folds got
    mixed up), and each predictions row must carry its own slide's label and fold."""
    from lrmil.mil.train import train
    from lrmil.store import FeatureFile, write_features

    rng = np.random.default_rng(0)
    rows = []
    for i in rng.permutation(24):  # files and CSV rows in an order unrelated to the labels
        label = int(rng.integers(2)) if i >= 8 else i % 2
        x = rng.normal(0, 1, (9, DIM)).astype(np.float32)
        x[:, 1] += 1.5 if label else -1.5  # every instance shifted: the mean feature decides the class
        write_features(tmp_path / "f" / f"slide{i}.h5", FeatureFile(
            np.zeros((9, 2), np.int64), x, np.zeros((9, 0), np.int64), 1024, 256, 5.0, 0.5, slide_id=f"slide{i}"))
        rows.append((f"slide{i}", ["tumour", "benign"][label], 0))
    splits = assign_folds(pd.DataFrame(rows, columns=["slide_id", "label", "fold"]), k=4, seed=1)
    splits.to_csv(tmp_path / "splits.csv", index=False)
    cfg = MILConfig(features=str(tmp_path / "f"), splits=str(tmp_path / "splits.csv"), out=str(tmp_path / "run"),
                    model=ABMILConfig(hidden_dim=16, attn_dim=8), epochs=6, patience=6, lr=5e-3)
    metrics = train(cfg)
    assert metrics["pooled"]["auc"] > 0.95 and metrics["pooled"]["slides"] == 24
    assert min(m["auc"] for m in metrics["folds"].values()) > 0.9
    table = pd.read_csv(tmp_path / "run" / "predictions.csv", dtype={"label": str}).set_index("slide_id")
    expected = splits.set_index("slide_id").loc[table.index]
    assert (table["label"] == expected["label"]).all() and (table["fold"] == expected["fold"]).all()
    assert ((table["p_tumour"] > 0.5) == (table["label"] == "tumour")).mean() > 0.9  # column order = sorted labels


@pytest.mark.parametrize("row, message", [("b,,1", "line 3: no label"), (",y,1", "line 3: no slide_id"),
                                          ("b,y,", "line 3: no fold"),
                                          ("b,y,x", "line 3: fold 'x' is not a whole number"),
                                          ("b,y,1.5", "line 3: fold '1.5' is not a whole number")])
def test_a_splits_row_without_a_label_or_a_whole_fold_is_one_line_naming_file_and_line(tmp_path, row, message):
    """A blank label made sorting the labels fail (a traceback); a fold of 'x' gave pandas' words without the file."""
    path = tmp_path / "splits.csv"
    path.write_text(f"slide_id,label,fold\na,x,0\n{row}\nc,y,2\nd,x,1\n")
    with pytest.raises(ValueError, match=f"^{re.escape(str(path))}, {re.escape(message)}$"):
        read_splits(path)


def test_clam_feature_files_with_only_features_and_coords_train_the_abmil(tmp_path):
    """CLAM's extract_features_fp.py writes `features` and `coords` and no attributes: every slide was skipped
    ("can't locate attribute: 'patch_size_level0'") and train stopped at 'no readable feature files'."""
    import h5py

    from lrmil.mil.train import train

    rng = np.random.default_rng(0)
    (tmp_path / "h5_files").mkdir()
    rows = []
    for i in range(6):
        with h5py.File(tmp_path / "h5_files" / f"slide_{i}.h5", "w") as f:
            f["features"] = rng.normal(0, 1, (5, 1024)).astype(np.float32)  # UNI's width
            f["coords"] = rng.integers(0, 9, (5, 2)).astype(np.int32) * 256
        rows.append(f"slide_{i},{['normal_tissue', 'tumor_tissue'][i % 2]},{i % 3}")
    (tmp_path / "splits.csv").write_text("slide_id,label,fold\n" + "\n".join(rows) + "\n")
    metrics = train(MILConfig(features=str(tmp_path / "h5_files"), splits=str(tmp_path / "splits.csv"),
                              out=str(tmp_path / "run"), model=ABMILConfig(hidden_dim=8, attn_dim=8), epochs=1))
    assert metrics["pooled"]["slides"] == 6
    assert load_mil(tmp_path / "run" / "fold0" / "model.safetensors").cfg.in_dim == 1024


def test_an_excel_saved_clam_style_splits_csv_reads_as_the_clean_one(tmp_path):
    """BOM, CRLF, ', ' separators, padded cells, slide ids with their file's suffix and CLAM's extra columns:
    ' label' was a missing column, 'tumor ' a class of its own, 'a.svs' looked for a.svs.h5 (every slide skipped)."""
    clean = tmp_path / "clean.csv"
    clean.write_text("slide_id,label,fold\na,tumor,0\nb,normal,1\nTCGA-01.9F3A,tumor,2\n")
    excel = tmp_path / "excel.csv"
    excel.write_bytes("\ufeffcase_id, slide_id, label, fold, site\r\nc1, a.svs, tumor , 0, X\r\n"
                      "c2, b.NDPI, normal, 1,\r\nc3, TCGA-01.9F3A, tumor, 2, Y\r\n".encode())
    pd.testing.assert_frame_equal(read_splits(excel), read_splits(clean))
    assert labels_of(read_splits(excel), excel) == ("normal", "tumor")


def test_a_splits_table_saved_as_excel_unicode_text_reads_as_the_clean_one(tmp_path):
    """Excel's 'Unicode Text' (UTF-16 with a BOM, tabs between columns, CRLF) stopped train at 'not UTF-8 text'."""
    clean, excel = tmp_path / "clean.csv", tmp_path / "excel.txt"
    clean.write_text("slide_id,label,fold\na,tumor,0\nb,normal,1\nc,tumor,2\n")
    excel.write_bytes("slide_id\tlabel\tfold\r\na\ttumor\t0\r\nb\tnormal\t1\r\nc\ttumor\t2\r\n".encode("utf-16"))
    pd.testing.assert_frame_equal(read_splits(excel), read_splits(clean))


def test_rows_of_empty_cells_excel_leaves_after_the_table_are_not_slides(tmp_path):
    """Excel saves the rows of a sheet whose cells were once formatted or cleared as ';;;': train stopped at
    'line 5: no slide_id' on a table that ends at line 4; an empty row inside the table is still named."""
    clean, excel = tmp_path / "clean.csv", tmp_path / "excel.csv"
    clean.write_text("slide_id,label,fold\na,tumor,0\nb,normal,1\nc,tumor,2\n")
    excel.write_bytes("\ufeffslide_id;label;fold;note\r\na;tumor;0;\r\nb;normal;1;\r\nc;tumor;2;\r\n;;;\r\n ; ;;\r\n"
                      .encode())
    pd.testing.assert_frame_equal(read_splits(excel), read_splits(clean))
    excel.write_text("slide_id;label;fold\na;tumor;0\n;;\nb;normal;1\nc;tumor;2\n")
    with pytest.raises(ValueError, match=rf"^{re.escape(str(excel))}, line 3: no slide_id$"):
        read_splits(excel)


def test_column_names_typed_in_capitals_name_the_columns(tmp_path):
    """'Slide_ID;Label;Fold', as typed in Excel, was 'missing column(s) slide_id, label, fold'; a name given twice
    in two spellings is refused rather than one of them read."""
    clean, typed = tmp_path / "clean.csv", tmp_path / "typed.csv"
    clean.write_text("case_id,slide_id,label,fold\nP1,a,tumor,0\nP2,b,normal,1\nP3,c,tumor,2\n")
    typed.write_text("Case_ID;Slide_ID;Label;FOLD;Notes\nP1;a;tumor;0;x\nP2;b;normal;1;\nP3;c;tumor;2;\n")
    pd.testing.assert_frame_equal(read_splits(typed), read_splits(clean))
    typed.write_text("slide_id,Label,label,fold\na,tumor,tumor,0\n")
    with pytest.raises(ValueError, match=rf"^{re.escape(str(typed))}: two columns named label \(column names ignore "
                                         r"case\)$"):
        read_splits(typed)


def test_labels_differing_only_in_case_are_refused_naming_both_lines(tmp_path):
    """'Tumor' on one row and 'tumor' elsewhere trained three classes (p_Tumor, p_normal, p_tumor) without a word."""
    path = tmp_path / "splits.csv"
    path.write_text("slide_id,label,fold\na,tumor,0\nb,normal,1\nc,Tumor,2\nd,Normal,0\n")
    with pytest.raises(ValueError, match=rf"^{re.escape(str(path))}, line 4: label 'Tumor' differs from 'tumor' "
                                         r"\(line 2\) only in case; spell each class one way$"):
        read_splits(path)


def test_a_single_label_is_refused_for_training_but_not_for_stage_1(tmp_path):
    """A CSV of one label trained models that answer it for every slide (AUC null, accuracy 1.0); stage 1 reads
    only the folds."""
    path = tmp_path / "splits.csv"
    path.write_text("slide_id,label,fold\na,tumor,0\nb,tumor ,1\nc,tumor,2\n")
    assert len(read_splits(path)) == 3
    with pytest.raises(ValueError, match=rf"^{re.escape(str(path))}: every slide is labelled 'tumor'; a classifier "
                                         "needs slides of at least two labels$"):
        labels_of(read_splits(path), path)


def test_slides_of_one_case_in_two_folds_are_refused_naming_the_case(tmp_path):
    """CLAM splits by case_id; a slide-level fold column put a patient's second slide in another fold silently."""
    path = tmp_path / "splits.csv"
    path.write_text("case_id,slide_id,label,fold\nP1,a,x,0\nP2,b,y,1\nP1,c,x,2\nP3,d,y,2\n")
    with pytest.raises(ValueError, match=r"case_id 'P1' has slides in folds 0, 2; give each case's slides one fold"):
        read_splits(path)


def test_a_listed_slide_without_features_is_one_line_naming_its_row_and_file(tmp_path, caplog):
    """It was '... cannot read features ([Errno 2] Unable to synchronously open file (unable to open file: name = ...,
    errno = 2, error message = ..., flags = 0, o_flags = 0))', without the CSV row."""
    from lrmil.mil.bags import load_bags
    from lrmil.store import FeatureFile, write_features

    write_features(tmp_path / "a.h5", FeatureFile(np.zeros((2, 2), np.int64), np.ones((2, DIM), np.float32),
                                                 np.zeros((2, 0), np.int64), 256, 256, 20.0, 0.5))
    splits = pd.DataFrame({"slide_id": ["a", "gone"], "label": ["x", "y"], "fold": [0, 1]})
    assert list(load_bags(tmp_path, splits, ("x", "y"))) == ["a"]
    assert caplog.messages == [f"gone (line 3 of the splits CSV): no feature file {tmp_path / 'gone.h5'}; "
                               "slide skipped"]
    with pytest.raises(FileNotFoundError,
                       match=r"looked for gone.h5, ...; the folder holds 1 .h5 file\(s\), e.g. a.h5\)$"):
        load_bags(tmp_path, splits.iloc[1:], ("x", "y"))


def test_a_feature_file_with_a_damaged_header_or_cut_short_is_one_line_and_the_rest_load(tmp_path, caplog):
    """A CLAM features folder with a file whose header claimed 10**12 rows ended `lrmil train` with a MemoryError
    traceback; a file cut short (a copy stopped midway) is left out in one line too."""
    from lrmil.mil.bags import load_bags
    from lrmil.store import FeatureFile, write_features

    write_features(tmp_path / "a.h5", FeatureFile(np.zeros((2, 2), np.int64), np.ones((2, DIM), np.float32),
                                                 np.zeros((2, 0), np.int64), 256, 256, 20.0, 0.5))
    cut_reason = damaged_feature_files(tmp_path, tmp_path / "a.h5", 1024)
    splits = pd.DataFrame({"slide_id": ["a", "huge", "cut"], "label": ["x", "y", "x"], "fold": [0, 1, 2]})
    assert list(load_bags(tmp_path, splits, ("x", "y"))) == ["a"]
    assert caplog.messages[0] == (f"{tmp_path / 'huge.h5'}: cannot read features ('features' declares 1000000000000 x "
                                  "1024 values but the file holds 0 of its 3906250000 chunks: damaged, or its writing "
                                  "was cut short; extract the slide again); slide skipped")
    assert caplog.messages[1] == f"{tmp_path / 'cut.h5'}: cannot read features ({cut_reason}); slide skipped"
    assert len(caplog.messages) == 2


def test_a_listed_slide_without_features_beside_another_s_of_its_file_name_names_the_file_it_would_have(tmp_path,
                                                                                                       caplog):
    """CON, never extracted, beside CON_.h5 of slide CON_ (the name CON's file gets): 'no feature file CON.h5', a name
    no run writes now. The line names CON_.h5, the name `lrmil extract` gives CON's, and says whose it is."""
    from lrmil.mil.bags import load_bags
    from lrmil.store import FeatureFile, write_features

    ff = FeatureFile(np.zeros((2, 2), np.int64), np.ones((2, DIM), np.float32), np.zeros((2, 0), np.int64), 256, 256,
                     20.0, 0.5, slide_id="CON_")
    write_features(tmp_path / "CON_.h5", ff)
    splits = pd.DataFrame({"slide_id": ["CON", "CON_"], "label": ["x", "y"], "fold": [0, 1]})
    assert list(load_bags(tmp_path, splits, ("x", "y"))) == ["CON_"]
    assert caplog.messages == [f"CON (line 2 of the splits CSV): no feature file {tmp_path / 'CON_.h5'} (that file "
                               "holds slide CON_'s); slide skipped"]
    with pytest.raises(FileNotFoundError, match=r"looked for CON_.h5, ...;"):
        load_bags(tmp_path, splits.iloc[:1], ("x", "y"))
    caplog.clear()  # the file's slide is named as it recorded it, not by the file's name
    write_features(tmp_path / "a_b.h5", dataclasses.replace(ff, slide_id="a?b"))
    load_bags(tmp_path, pd.DataFrame({"slide_id": ["a:b", "a?b"], "label": ["x", "y"], "fold": [0, 1]}), ("x", "y"))
    assert caplog.messages == [f"a:b (line 2 of the splits CSV): no feature file {tmp_path / 'a_b.h5'} (that file "
                               "holds slide a?b's); slide skipped"]


def test_extract_s_out_given_as_features_names_the_feature_folder_inside(tmp_path):
    """`--features work20` (extract's --out) skipped every slide and stopped at 'the folder holds no .h5 files',
    without saying that the files are in work20/features/lrmil_vit_tiny_20x_256px."""
    from lrmil.mil.bags import load_bags
    from lrmil.store import FeatureFile, write_features

    inside = tmp_path / "work20" / "features" / "lrmil_vit_tiny_20x_256px"
    write_features(inside / "a.h5", FeatureFile(np.zeros((2, 2), np.int64), np.ones((2, DIM), np.float32),
                                                np.zeros((2, 0), np.int64), 256, 256, 20.0, 0.5))
    (tmp_path / "work20" / "patches").mkdir()
    (tmp_path / "work20" / "patches" / "a.h5").write_bytes(b"")  # grid files: not features
    splits = pd.DataFrame({"slide_id": ["a"], "label": ["x"], "fold": [0]})
    for given in (tmp_path / "work20", tmp_path / "work20" / "features"):
        with pytest.raises(FileNotFoundError, match=rf"the folder holds no .h5 files\); give --features the folder of "
                                                    rf"one encoder's files: {re.escape(str(inside))}$"):
            load_bags(given, splits, ("x", "y"))


def test_a_label_no_fold_trains_on_is_warned_about_per_fold(caplog):
    """A class whose only slides sit in one fold: the test fold's model never saw it, and nothing said so."""
    from lrmil.mil.train import warn_untrained_labels

    bags = {b.slide_id: b for b in make_bags(4, 0)}
    ids = list(bags)
    warn_untrained_labels(0, {"train": [ids[0], ids[2]], "val": [ids[1]], "test": [ids[3]]}, bags, ("x", "y"))
    assert caplog.messages == ["fold 0: no training slide is labelled 'y' (its slides are all in this fold's test or "
                               "validation fold), so this fold's model never predicts it; "
                               "spread each label over the folds"]


def test_excel_csv_of_a_comma_decimal_locale_reads_and_one_in_its_code_page_is_named(tmp_path):
    """Excel in most of Europe saves 'CSV' with ';' ('missing column(s) slide_id, label, fold (need slide_id, label,
    fold)') and in cp1252 ("error: 'utf-8' codec can't decode byte 0xf6 in position ...", no file named)."""
    clean, semicolons, cp1252 = tmp_path / "clean.csv", tmp_path / "semicolons.csv", tmp_path / "cp1252.csv"
    clean.write_text("slide_id,label,fold\na,Tumör,0\nb,normal,1\nc,Tumör,2\n")
    semicolons.write_text(clean.read_text().replace(",", ";"))
    pd.testing.assert_frame_equal(read_splits(semicolons), read_splits(clean))
    cp1252.write_bytes(clean.read_text().encode("cp1252"))
    with pytest.raises(ValueError, match=rf"^{re.escape(str(cp1252))}, line 2: not UTF-8 text; save it as 'CSV UTF-8"):
        read_splits(cp1252)


def test_clam_files_of_two_feature_widths_are_refused_naming_both(tmp_path):
    """CLAM/TRIDENT files name no encoder: UNI's 1024-d files beside a CONCH 512-d one ended in a traceback,
    'RuntimeError: mat1 and mat2 shapes cannot be multiplied (9x512 and 1024x128)', mid-epoch."""
    import h5py

    from lrmil.mil.bags import load_bags

    for i, width in enumerate([1024, 1024, 512]):
        with h5py.File(tmp_path / f"s{i}.h5", "w") as f:
            f["features"], f["coords"] = np.zeros((3, width), np.float32), np.zeros((3, 2), np.int32)
    splits = pd.DataFrame({"slide_id": ["s0", "s1", "s2"], "label": ["x", "y", "x"], "fold": [0, 1, 2]})
    with pytest.raises(ValueError, match=r"\? weights \? at \?, 1024-d: 2 slide\(s\), e.g. s0; .* 512-d: 1 slide\(s\)"):
        load_bags(tmp_path, splits, ("x", "y"))


def test_a_label_pandas_reads_as_missing_is_a_label_and_an_empty_file_is_named(tmp_path):
    """A class 'NA' (or 'None', 'null') was 'line 2: no label' though the cell holds it; an empty file was
    'error: No columns to parse from file', no file named; a header alone 'need at least 3 fold(s) ..., found 0'."""
    path = tmp_path / "splits.csv"
    path.write_text("slide_id,label,fold\na,NA,0\nb,None,1\nc,NA,2\n")
    assert labels_of(read_splits(path), path) == ("NA", "None")
    path.write_text("")
    with pytest.raises(ValueError, match=rf"^{re.escape(str(path))}: empty file"):
        read_splits(path)
    path.write_text("slide_id;label;fold\r\n;;\r\n")  # `lrmil synth --count 0`, or an empty sheet from Excel
    with pytest.raises(ValueError, match=rf"^{re.escape(str(path))}: no slides listed, only the header$"):
        read_splits(path)


def test_train_warns_of_a_label_a_fold_never_trains_on(tmp_path, caplog):
    """The warning is given by train itself, for each fold whose training slides lack the label."""
    import h5py

    from lrmil.mil.train import train

    rng = np.random.default_rng(0)
    rows = []
    for i in range(7):
        with h5py.File(tmp_path / f"s{i}.h5", "w") as f:
            f["features"] = rng.normal(0, 1, (4, 8)).astype(np.float32)
            f["coords"] = rng.integers(0, 9, (4, 2)).astype(np.int32) * 256
        rows.append(f"s{i},{'rare' if i == 6 else ['a', 'b'][i % 2]},{0 if i == 6 else i % 3}")
    (tmp_path / "splits.csv").write_text("slide_id,label,fold\n" + "\n".join(rows) + "\n")
    with caplog.at_level("WARNING"):
        train(MILConfig(features=str(tmp_path), splits=str(tmp_path / "splits.csv"), out=str(tmp_path / "run"),
                        model=ABMILConfig(hidden_dim=8, attn_dim=8), epochs=1))
    warned = sorted(m.split(":")[0] for m in caplog.messages if "no training slide is labelled 'rare'" in m)
    assert warned == ["fold 0", "fold 2"]  # fold 0 tests on it, fold 2 validates on it


def test_a_splits_csv_typed_by_hand_finds_the_features_of_a_slide_named_on_a_mac(tmp_path, caplog):
    """'Prøve_é' typed into the splits CSV (NFC) and the feature file named after a slide copied from a Mac (NFD):
    the slide was skipped, 'no feature file'."""
    import unicodedata

    from lrmil.mil.bags import load_bags
    from lrmil.store import FeatureFile, write_features

    write_features(tmp_path / unicodedata.normalize("NFD", "Prøve_é.h5"), FeatureFile(
        np.zeros((2, 2), np.int64), np.ones((2, DIM), np.float32), np.zeros((2, 0), np.int64), 256, 256, 20.0, 0.5))
    splits = pd.DataFrame({"slide_id": [unicodedata.normalize("NFC", "Prøve_é")], "label": ["x"], "fold": [0]})
    assert list(load_bags(tmp_path, splits, ("x",))) == splits["slide_id"].tolist() and not caplog.messages


def test_a_splits_csv_id_in_another_case_finds_the_one_feature_file_of_that_name(tmp_path, caplog):
    """Slide ids ignore case elsewhere (SlideIds): 'case7' in the splits CSV beside Case7.h5 was skipped, 'no
    feature file'. Two files of that name in other cases are named, not guessed between."""
    from lrmil.mil.bags import load_bags
    from lrmil.store import FeatureFile, write_features

    def features(name: str) -> None:
        write_features(tmp_path / name, FeatureFile(np.zeros((2, 2), np.int64), np.ones((2, DIM), np.float32),
                                                    np.zeros((2, 0), np.int64), 256, 256, 20.0, 0.5))

    features("Case7.h5")
    features("case8.h5")
    splits = pd.DataFrame({"slide_id": ["case7", "case8"], "label": ["x", "x"], "fold": [0, 0]})
    assert list(load_bags(tmp_path, splits, ("x",))) == ["case7", "case8"] and not caplog.messages
    features("CASE7.h5")
    assert list(load_bags(tmp_path, splits, ("x",))) == ["case8"]
    assert caplog.messages == [f"case7 (line 2 of the splits CSV): no feature file {tmp_path / 'case7.h5'} (CASE7.h5 "
                               "and Case7.h5 differ from it only in case: keep the slide's); slide skipped"]


def test_a_slide_without_features_is_not_given_those_of_the_slide_its_file_name_became(tmp_path, caplog):
    """CON's feature file is CON_.h5 (Windows refuses CON.h5): a store holding only slide CON_'s CON_.h5 has no
    features for CON, which is skipped rather than trained on CON_'s; a slide with none is told the name extract
    gives its file (PRN_.h5), not one it never writes."""
    from lrmil.mil.bags import load_bags
    from lrmil.store import FeatureFile, write_features

    write_features(tmp_path / "CON_.h5", FeatureFile(np.zeros((2, 2), np.int64), np.ones((2, DIM), np.float32),
                                                     np.zeros((2, 0), np.int64), 256, 256, 20.0, 0.5, slide_id="CON_"))
    splits = pd.DataFrame({"slide_id": ["CON_", "CON", "PRN"], "label": ["x"] * 3, "fold": [0] * 3})
    assert list(load_bags(tmp_path, splits, ("x",))) == ["CON_"]
    assert caplog.messages == [f"CON (line 3 of the splits CSV): no feature file {tmp_path / 'CON_.h5'} (that file "
                               "holds slide CON_'s); slide skipped",
                               f"PRN (line 4 of the splits CSV): no feature file {tmp_path / 'PRN_.h5'}; slide skipped"]


def test_a_fold_left_without_slides_that_have_features_is_refused_not_trained_on_nothing(tmp_path):
    """Fold 2's slides failed at extraction: the two folds left tested and validated on each other, trained on no
    slide, and wrote the models as initialised with their metrics (two warnings a fold, exit 0)."""
    import h5py

    from lrmil.mil.train import train

    rng = np.random.default_rng(0)
    for i in range(4):
        with h5py.File(tmp_path / f"s{i}.h5", "w") as f:
            f["features"] = rng.normal(0, 1, (4, 8)).astype(np.float32)
            f["coords"] = rng.integers(0, 9, (4, 2)).astype(np.int32) * 256
    splits = tmp_path / "splits.csv"
    splits.write_text("slide_id,label,fold\ns0,a,0\ns1,b,0\ns2,a,1\ns3,b,1\nbroken,a,2\nno_mpp,b,2\n")
    with pytest.raises(ValueError, match=rf"^{re.escape(str(splits))}: the slides with features are all in fold\(s\) "
                                         r"0, 1; training needs slides in at least 3 folds \(test, validation, "
                                         r"train\)"):
        train(MILConfig(features=str(tmp_path), splits=str(splits), out=str(tmp_path / "run"),
                        model=ABMILConfig(hidden_dim=8, attn_dim=8), epochs=1))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("again, said", [("a,y,2", "slide_id 'a' listed twice, with labels 'x' and 'y'"),
                                         ("a.svs,x,1", "slide_id 'a' listed twice, both labelled 'x'"),
                                         ("A,x,2", "slide_ids 'a' and 'A' name one slide (ids ignore case), both "
                                                   "labelled 'x'")])
def test_a_slide_listed_twice_names_both_lines_and_both_labels(tmp_path, again, said):
    """Only the second line was named ('line 5: duplicate slide_id'): which row was first, and which label meant,
    had to be searched for in the sheet. 'A' below 'a' was two slides here and one slide's features elsewhere."""
    path = tmp_path / "splits.csv"
    path.write_text(f"slide_id,label,fold\nb,y,0\na,x,1\nc,x,2\n{again}\n")
    with pytest.raises(ValueError, match=f"^{re.escape(str(path))}, lines 3 and 5: {re.escape(said)}; keep one row "
                                         "per slide$"):
        read_splits(path)
