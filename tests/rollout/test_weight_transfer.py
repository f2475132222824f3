"""The broadcast push's shared half (rollout/weight_transfer.py) without servers: the buckets both sides cut
from the same metadata, a round trip through a real gloo group of three processes (rank 0 sends, two ranks
receive, as two servers' workers do), and the rendezvous bound to one interface only."""

import io
import socket

import psutil
import pytest
import torch
import torch.multiprocessing as mp

from rollout.vllm_backend import vllm_available

OK, WHY = vllm_available()
pytestmark = pytest.mark.skipif(not OK, reason=WHY)


def named() -> list[tuple[str, torch.Tensor]]:
    """Mixed dtypes and odd sizes: a bf16 tensor of 7 elements leaves the next fp32 one at an odd offset."""
    g = torch.Generator().manual_seed(0)
    return [
        ("a", torch.randn(3, 5, generator=g)),
        ("b", torch.randn(7, generator=g).to(torch.bfloat16)),
        ("c", torch.randn(11, 2, generator=g)),
        ("d", torch.arange(5)),
        ("e", torch.randn(40, generator=g)),
    ]


def metas():
    from rollout.weight_transfer import metas_of

    return metas_of((n, t.dtype, tuple(t.shape)) for n, t in named())


def test_buckets_pack_consecutive_tensors_up_to_the_limit():
    from rollout.weight_transfer import buckets, nbytes

    sizes = [nbytes(m) for m in metas()]
    assert sizes == [60, 14, 88, 40, 160]
    assert buckets(metas(), 100) == [[0, 1], [2], [3], [4]]  # 160 > 100: a bucket of its own
    assert buckets(metas(), 10**6) == [[0, 1, 2, 3, 4]]
    assert buckets(metas(), 1) == [[0], [1], [2], [3], [4]]


def _receiver(rank: int, port: int, out) -> None:
    from rollout.weight_transfer import Communicator, receive_buckets

    comm = Communicator("gloo", "127.0.0.1", port, rank=rank, world=3, device=torch.device("cpu"))
    got: list = []
    count = receive_buckets(comm, metas(), 100, got.extend)
    # as bytes: a tensor put on a queue is shared by file descriptor, gone once this process exits
    buf = io.BytesIO()
    torch.save({n: t.clone() for n, t in got}, buf)
    out.put((count, buf.getvalue()))
    comm.close()


def test_a_gloo_group_carries_every_tensor_bit_exact_to_every_receiver():
    from rollout.weight_transfer import Communicator, send_buckets

    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    listen = _listening()
    port = listen.getsockname()[1]
    procs = [ctx.Process(target=_receiver, args=(r, port, out)) for r in (1, 2)]
    for p in procs:
        p.start()
    try:
        comm = Communicator("gloo", "127.0.0.1", port, rank=0, world=3, device=torch.device("cpu"), listen=listen)
        assert send_buckets(comm, iter(named()), metas(), 100) == 5
        for _ in procs:
            count, raw = out.get(timeout=300)  # a hang guard
            got = torch.load(io.BytesIO(raw))
            assert count == 5 and list(got) == [n for n, _ in named()]
            assert all(got[n].dtype == t.dtype and torch.equal(got[n], t) for n, t in named())
        comm.close()
    finally:
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():
                p.kill()
    assert all(p.exitcode == 0 for p in procs)


def test_a_stream_that_disagrees_with_its_metadata_is_refused_by_name():
    from rollout.weight_transfer import Communicator, send_buckets

    listen = _listening()
    comm = Communicator(
        "gloo", "127.0.0.1", listen.getsockname()[1], rank=0, world=1, device=torch.device("cpu"), listen=listen
    )
    wrong = [("a", torch.zeros(3, 5)), ("x", torch.zeros(7, dtype=torch.bfloat16))]
    with pytest.raises(ValueError, match=r"disagrees with its metadata at 1.*'x'"):
        send_buckets(comm, iter(wrong), metas(), 100)
    comm.close()


def test_the_rendezvous_listens_on_the_chosen_interface_only():
    """Rank 0's TCPStore serves the socket bound to the push host (loopback here), not 0.0.0.0."""
    from rollout.weight_transfer import Communicator, local_address

    assert local_address("127.0.0.1") == "127.0.0.1"

    def listening() -> set[tuple[str, int]]:
        return {(c.laddr.ip, c.laddr.port) for c in psutil.Process().net_connections("tcp") if c.status == "LISTEN"}

    before = listening()
    listen = _listening()
    port = listen.getsockname()[1]
    comm = Communicator("gloo", "127.0.0.1", port, rank=0, world=1, device=torch.device("cpu"), listen=listen)
    opened = listening() - before
    assert ("127.0.0.1", port) in opened
    assert not [a for a in opened if a[0] in ("0.0.0.0", "::")]  # the store and gloo: nothing on every interface
    comm.close()


def _listening() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    s.listen()
    return s
