"""Where each stage writes under the project's `data/` directory (inside dvc.yaml's outs)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Layout:
    """Paths of every stage output below `root` (the project directory)."""

    root: Path

    @property
    def params(self) -> Path:
        return self.root / "params.yaml"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def target_dir(self) -> Path:
        return self.data / "target"

    @property
    def manifest(self) -> Path:
        return self.target_dir / "manifest.json"

    @property
    def reference_validation(self) -> Path:
        """Exact samples for every choice made on evaluation (best K)."""
        return self.target_dir / "reference_validation.npy"

    @property
    def reference_test(self) -> Path:
        """Exact samples used only for the reported quality."""
        return self.target_dir / "reference_test.npy"

    @property
    def teacher(self) -> Path:
        return self.data / "teacher" / "teacher.pt"

    @property
    def teacher_log(self) -> Path:
        return self.data / "teacher" / "train_log.jsonl"

    @property
    def fragments_dir(self) -> Path:
        return self.data / "fragments"

    @property
    def bank(self) -> Path:
        return self.fragments_dir / "bank.pt"

    @property
    def fragments_manifest(self) -> Path:
        return self.fragments_dir / "manifest.json"

    @property
    def student(self) -> Path:
        return self.data / "student" / "student.pt"

    @property
    def student_log(self) -> Path:
        return self.data / "student" / "train_log.jsonl"

    @property
    def eval_dir(self) -> Path:
        return self.data / "eval"

    @property
    def metrics(self) -> Path:
        return self.eval_dir / "metrics.json"

    @property
    def report(self) -> Path:
        return self.eval_dir / "report.json"

    @property
    def budget_curve(self) -> Path:
        return self.eval_dir / "budget_curve.json"

    @property
    def plots_dir(self) -> Path:
        return self.eval_dir / "plots"
