"""The tests. ``tests/stem``, ``tests/model`` and ``tests/viz`` mirror the package's layers
(``tests/stem/test_com.py`` tests ``rrvae_nb/stem/com.py``); the files here test what spans them
(metrics, the chapters' helpers, the LiberTEM UDF, refusals of bad input, the defaults on a new
material, the GPU path) or lies outside the package (the chapters, the course kit, the book, the
environment, the benches, the layout itself). Test folders are packages so that two layers may
hold test files of the same name."""
