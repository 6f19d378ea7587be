"""Feature cache: exact round trips, corruption handling, LRU bound, concurrent writers."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from glance_focus.feature_cache import CachedFeatures, FeatureCache, FeatureKey


def _key(video: str = "v0", sampling: str = "uniform32") -> FeatureKey:
    return FeatureKey(
        video_hash=video, encoder="ViT-B-32:random-seed0", fingerprint="ce02bbed681355d8", sampling=sampling
    )


def _entry(seed: int, frames: int = 32, dim: int = 512) -> dict[str, object]:
    generator = torch.Generator().manual_seed(seed)
    return {
        "features": torch.randn(frames, dim, generator=generator),
        "timestamps": torch.linspace(0.0, 59.9, frames, dtype=torch.float64) + seed,
        "thumbnails": torch.randint(0, 256, (frames, 96, 170, 3), generator=generator, dtype=torch.uint8),
        "info": {"duration_s": 60.0, "fps": 29.97, "seed": seed},
    }


def _assert_matches(hit: CachedFeatures | None, entry: dict[str, object], key: FeatureKey) -> None:
    assert hit is not None and hit.key == key
    assert torch.equal(hit.features, entry["features"])
    assert torch.equal(hit.timestamps, entry["timestamps"])
    assert torch.equal(hit.thumbnails, entry["thumbnails"])
    assert hit.info == entry["info"]


def test_round_trip_is_exact_and_fast(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path, max_bytes=100 << 20)
    key, entry = _key(), _entry(0)
    assert cache.get(key) is None
    assert cache.put(key, **entry)
    start = time.perf_counter()
    hit = cache.get(key)
    assert time.perf_counter() - start < 0.1
    _assert_matches(hit, entry, key)
    assert hit.features.dtype == torch.float32 and hit.thumbnails.dtype == torch.uint8
    # Every part of the key matters.
    for other in (_key("v1"), _key(sampling="uniform16"), FeatureKey("v0", "ViT-B-32:openai", "x", "uniform32")):
        assert cache.get(other) is None


def test_numpy_inputs_and_no_thumbnails(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path, max_bytes=1 << 20)
    features = np.random.default_rng(0).standard_normal((4, 8))  # float64: stored as float32
    cache.put(_key(), features, [0.0, 0.5, 1.0, 1.5])
    hit = cache.get(_key())
    assert hit is not None and hit.thumbnails is None and hit.info == {}
    assert torch.equal(hit.features, torch.from_numpy(features).float())
    assert hit.timestamps.tolist() == [0.0, 0.5, 1.0, 1.5]


def test_rejects_inconsistent_shapes(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path, max_bytes=1 << 20)
    with pytest.raises(ValueError, match="timestamps"):
        cache.put(_key(), torch.zeros(4, 8), torch.zeros(3))
    with pytest.raises(ValueError, match="thumbnails"):
        cache.put(_key(), torch.zeros(4, 8), torch.zeros(4), thumbnails=torch.zeros(3, 9, 16, 3))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_file_is_a_miss_and_removed(tmp_path: Path, damage: str) -> None:
    cache = FeatureCache(tmp_path, max_bytes=100 << 20)
    key = _key()
    cache.put(key, **_entry(0))
    path = cache.path(key)
    data = path.read_bytes()
    path.write_bytes({"truncate": data[: len(data) // 2], "garbage": os.urandom(500), "empty": b""}[damage])
    assert cache.get(key) is None
    assert not path.exists()
    cache.put(key, **_entry(1))  # the slot is usable again
    _assert_matches(cache.get(key), _entry(1), key)


def test_eviction_keeps_total_under_max_bytes_least_recently_used_first(tmp_path: Path) -> None:
    probe = FeatureCache(tmp_path / "probe", max_bytes=1 << 30)
    probe.put(_key(), **_entry(0))
    entry_bytes = probe.path(_key()).stat().st_size
    cache = FeatureCache(tmp_path / "cache", max_bytes=3 * entry_bytes + entry_bytes // 2)
    keys = [_key(f"v{i}") for i in range(5)]
    for i, key in enumerate(keys[:3]):
        cache.put(key, **_entry(i))
        time.sleep(0.01)
    assert cache.get(keys[0]) is not None  # touch v0: v1 is now the least recently used
    time.sleep(0.01)
    cache.put(keys[3], **_entry(3))
    # Reading touches v0, v2, v3 in this order (v1 was evicted), so v0 goes next.
    assert [cache.get(key) is not None for key in keys[:4]] == [True, False, True, True]
    time.sleep(0.01)
    cache.put(keys[4], **_entry(4))
    total = sum(path.stat().st_size for path in (tmp_path / "cache").iterdir())
    assert total <= cache.max_bytes
    assert [cache.get(key) is not None for key in keys] == [False, False, True, True, True]
    assert not cache.put(_key("huge"), torch.zeros(10_000, 512), torch.zeros(10_000))


def test_concurrent_writers_and_readers_never_see_partial_entries(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path, max_bytes=100 << 20)
    keys = [_key(f"v{i}") for i in range(3)]
    entries = {seed: _entry(seed, frames=16) for seed in range(6)}
    errors: list[BaseException] = []

    def writer(worker: int) -> None:
        try:
            for step in range(6):
                seed = (worker + step) % 6
                cache.put(keys[seed % 3], **entries[seed])
        except BaseException as error:
            errors.append(error)

    def reader() -> None:
        try:
            for _ in range(30):
                for key in keys:
                    hit = cache.get(key)
                    if hit is not None:  # any whole entry ever written for this key
                        seed = hit.info["seed"]
                        assert seed % 3 == keys.index(key)
                        _assert_matches(hit, entries[seed], key)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    threads += [threading.Thread(target=reader) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert all(cache.get(key) is not None for key in keys)
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".safetensors"] * 3  # no temp files left
