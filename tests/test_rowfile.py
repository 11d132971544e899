"""core/rowfile.py: an output computed into a nameless file and committed to the store in blocks
(Multi-DProxy's fused features and proxies)."""

import h5py
import numpy as np
import pytest
import torch

from mdclust.core import store as store_mod
from mdclust.core.rowfile import RowFile
from mdclust.core.store import Store
from mdclust.methods import multidproxy as mdp
from mdclust.methods import multidproxy_net as net


def test_rows_written_in_blocks_read_back_exactly_and_the_file_has_no_name(tmp_path):
    rng = np.random.default_rng(0)
    full = rng.normal(size=(1000, 7)).astype(np.float32)
    rf = RowFile(full.shape, np.float32, folder=tmp_path)
    for i in range(0, 1000, 300):
        rf[i:i + 300] = full[i:i + 300]
    assert list(tmp_path.iterdir()) == []  # nothing to leave behind, even after kill -9
    assert (len(rf), rf.ndim, rf.size, rf.nbytes) == (1000, 2, 7000, 28000)
    np.testing.assert_array_equal(rf[0:1000], full)
    np.testing.assert_array_equal(rf[123:456], full[123:456])
    assert rf[990:2000].shape == (10, 7)  # clipped as numpy clips
    with pytest.raises(ValueError, match="block of shape"):
        rf[0:3] = full[:4]
    with pytest.raises(TypeError, match="contiguous row slices"):
        rf[::2]
    rf.close()


def test_the_store_copies_a_row_file_in_blocks_and_sees_it_unchanged(store_path, monkeypatch):
    monkeypatch.setattr(store_mod, "CHUNK_BYTES", 4096)  # several chunks, several blocks
    rng = np.random.default_rng(1)
    full = rng.normal(size=(5000, 16)).astype(np.float32)
    rf = RowFile(full.shape, np.float32, folder=store_path.parent)
    rf[0:5000] = full
    st = Store(store_path)
    with st.transaction() as txn:
        txn.put_group("trained/x/multidproxy", {"fused": rf, "n": np.arange(3)})
    g = st.read_group("trained/x/multidproxy")
    np.testing.assert_array_equal(g["fused"], full)
    with h5py.File(store_path) as f:
        ds = f["trained/x/multidproxy/fused"]
        assert ds.chunks == (64, 16) and ds.fletcher32  # whole rows, checksummed
    before = store_path.stat().st_mtime_ns
    with st.transaction() as txn:  # the same numbers: nothing to rewrite
        txn.put_group("trained/x/multidproxy", {"fused": rf, "n": np.arange(3)})
        assert not txn.dirty
    assert store_path.stat().st_mtime_ns == before
    changed = full.copy()
    changed[4321, 5] += 1
    rf[4321:4322] = changed[4321:4322]
    with st.transaction() as txn:
        txn.put_group("trained/x/multidproxy", {"fused": rf, "n": np.arange(3)})
        assert txn.dirty
    np.testing.assert_array_equal(st.read_group("trained/x/multidproxy")["fused"], changed)


def test_fused_features_and_proxies_into_a_row_file_equal_the_arrays(tmp_path):
    torch.manual_seed(2)
    d, n = 16, 9000
    v = torch.nn.functional.normalize(torch.randn(n, d), dim=-1).numpy()
    C = torch.nn.functional.normalize(torch.randn(6, d), dim=-1)
    model = net.MultiDProxy(n, d, C[0].numpy(), layers=1).eval()
    with torch.no_grad():
        model.base_proxies.add_(torch.randn(n, d))
    ref = mdp.reference_index(n, 64, 0)
    held = net.fused_features(model, v, C[0], C, ref, chunk=1000)
    into = net.fused_features(model, v, C[0], C, ref, chunk=1000,
                              out=RowFile((n, d), np.float32, folder=tmp_path))
    np.testing.assert_array_equal(into[0:n], held)


def test_all_proxies_into_a_row_file_match_the_whole_array(tmp_path):
    rng = np.random.default_rng(3)
    unit = lambda x: (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)  # noqa
    v, C = unit(rng.normal(size=(9000, 16))), unit(rng.normal(size=(12, 16)))
    fit = net.Fit(v, C, C[0], C[1], mdp.config_for(3, epochs=2))
    whole = fit.all_proxies()
    into = fit.all_proxies(out=RowFile(whole.shape, np.float32, folder=tmp_path))
    np.testing.assert_allclose(into[0:len(whole)], whole, atol=1e-6)


def test_a_row_file_group_large_enough_goes_to_a_data_file(store_path, monkeypatch):
    monkeypatch.setattr(store_mod, "EXTERNAL_MIN_BYTES", 1024)
    full = np.random.default_rng(4).normal(size=(3000, 8)).astype(np.float32)
    rf = RowFile(full.shape, np.float32, folder=store_path.parent)
    rf[0:3000] = full
    st = Store(store_path)
    with st.transaction() as txn:
        txn.put_group("trained/x/multidproxy", {"fused": rf})
    assert len(list(st.data_dir.glob("*.h5"))) == 1
    with h5py.File(store_path) as f:
        assert isinstance(f.get("trained/x/multidproxy", getlink=True), h5py.ExternalLink)
    np.testing.assert_array_equal(st.read_group("trained/x/multidproxy")["fused"], full)
