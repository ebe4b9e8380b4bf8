# One command per job; `make pdf` rebuilds what the write-up reads whenever the code changed.
PY ?= python
# the program that writes the numbers and figures: the repository's VI.py, or the hand-in's
# (CI passes VI=<the bundled VI.py>, so the PDF is built by the file the zip holds)
VI ?= VI.py
CODE := VI.py gmm_em.py kde.py ebm.py theory/macros.py
THEORY := $(wildcard theory/*.tex)

.PHONY: all figures pdf test lint clean submission

all: pdf

# Every number and figure of the main text (about 20 s).
figures: plots/results.tex

plots/results.tex: $(CODE)
	$(PY) $(VI)

# The main run and its appendix (the seed sweep, every EBM training route, every tau): every
# number and figure theory.pdf reads (a few minutes on two cores).
plots/appendix.tex: $(CODE)
	$(PY) $(VI) --appendix

pdf: theory/theory.pdf

theory/theory.pdf: plots/appendix.tex $(THEORY) theory/latexmkrc
	cd theory && latexmk theory.tex

test:
	$(PY) -m pytest -q

lint:
	$(PY) -m ruff check .

clean:
	cd theory && latexmk -C theory.tex
	find plots -mindepth 1 ! -name README.md -delete

# The hand-in: NETID.zip with exactly theory.pdf and a self-contained VI.py.
# The netid is checked first, so a missing or bad one writes nothing.
submission:
	@$(PY) tools/bundle.py --check --netid "$(NETID)"
	$(MAKE) pdf
	$(PY) tools/bundle.py --netid "$(NETID)"
