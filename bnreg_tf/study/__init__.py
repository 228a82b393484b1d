"""The study floor: the paper's ablation grid run through the run floor, and its report
(docs/architecture.md)."""
