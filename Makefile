# One command per job; `make pdf` rebuilds what the write-up reads whenever the code changed.
# The seed sweep and the routes benchmark are independent: they run side by side.
MAKEFLAGS += --jobs=2
PY ?= python
CODE := VI.py gmm_em.py kde.py ebm.py theory/numbers.tsv
THEORY := $(wildcard theory/*.tex)

.PHONY: all figures pdf test lint clean submission

all: pdf

figures: plots/results.tex

# Every number and figure of the write-up (about 15 s).
plots/results.tex: $(CODE)
	$(PY) VI.py

# The spread over 8 seeds (numbers only, two seeds at a time; seed 0 is reused from the run above).
plots/seeds.tex: $(CODE) bench/seeds.py plots/results.tex
	$(PY) bench/seeds.py --seeds 8 --reuse plots/results.json --json plots/seeds.json --tex plots/seeds.tex

# The EBM by every training route with restarts, and every tau trained to convergence.
plots/routes.tex: $(CODE) bench/routes.py plots/results.tex
	$(PY) bench/routes.py --json plots/routes.json --tex plots/routes.tex

# The normalising flow's committed record against this run's EBM (seconds; the record takes minutes).
plots/flow.tex: bench/peers.py bench/flow_record.json plots/results.tex
	$(PY) bench/peers.py --from-record bench/flow_record.json --tex plots/flow.tex

pdf: theory/theory.pdf

theory/theory.pdf: plots/results.tex plots/seeds.tex plots/routes.tex plots/flow.tex $(THEORY) theory/latexmkrc
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
