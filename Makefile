# One command per job; `make pdf` rebuilds what the write-up reads whenever the code changed.
PY ?= python
CODE := VI.py gmm_em.py kde.py ebm.py
THEORY := $(wildcard theory/*.tex)

.PHONY: all figures seeds twin pdf test clean submission

all: pdf

figures: plots/results.tex

seeds: plots/seeds.tex

twin: plots/twin.tex

# Every number and figure of the write-up (about 20 s).
plots/results.tex: $(CODE)
	$(PY) VI.py

# The spread over 10 seeds (numbers only, two seeds at a time; seed 0 is reused from the run
# above): about a minute and a half.
plots/seeds.tex: $(CODE) bench/seeds.py plots/results.tex
	$(PY) bench/seeds.py --seeds 10 --reuse plots/results.json --json plots/seeds.json --tex plots/seeds.tex

# The chosen EBM retrained with the exact gradient (a few seconds).
plots/twin.tex: $(CODE) bench/twin.py plots/results.tex
	$(PY) bench/twin.py --tex plots/twin.tex --json plots/twin.json

pdf: theory/theory.pdf

theory/theory.pdf: plots/results.tex plots/seeds.tex plots/twin.tex $(THEORY) theory/latexmkrc
	cd theory && latexmk theory.tex

test:
	$(PY) -m pytest -q

clean:
	cd theory && latexmk -C theory.tex
	find plots -mindepth 1 ! -name README.md -delete

# The hand-in: NETID.zip with exactly theory.pdf and a self-contained VI.py.
# The netid is checked first, so a missing or bad one writes nothing.
submission:
	@$(PY) tools/bundle.py --check --netid "$(NETID)"
	$(MAKE) pdf
	$(PY) tools/bundle.py --netid "$(NETID)"
