"""Experiments built on the library: each a package of its own (study/: the embedded
AMD-vs-VideoMAE study). They import the library; the library never imports them."""
