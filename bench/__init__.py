"""Speed benchmark of the rrVAE: the paper's spatial decoder against the package's default.

Run ``python -m bench`` (or ``make bench``): about 15 to 30 minutes on two cores. ``python -m bench
--quick`` checks the script itself in about a minute on small sizes (its numbers mean nothing).

What is measured (one run, same data, same seed, same batch size and learning rate for every
row), each training row in its own subprocess so that its peak resident memory is its own:

- CPU-seconds (``time.process_time``: both threads summed) and wall seconds per epoch, patterns
  per CPU-second, peak RSS;
- held-out reconstruction error and angle recovery after a fixed CPU budget;
- time to quality: the training CPU time until the angle recovery first reaches 0.95, and until
  the model is good (angle recovery >= 0.95 *and* a held-out error below the noise of the data);
- the same per-epoch cost on simulated graphene patterns (:mod:`rrvae_nb.simulate`);
- encode throughput, the matrix-product FLOPs per epoch and the machine's measured peak.

Modules: :mod:`bench.rows` (the configurations), :mod:`bench.flops` (FLOP counts and the peak),
:mod:`bench.quality` (angle recovery, reconstruction error), :mod:`bench.data` (the data sets),
:mod:`bench.worker` (what runs inside a subprocess), :mod:`bench.report` (tables and files),
:mod:`bench.run` (the command line).
"""
