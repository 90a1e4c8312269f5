"""What a run, a model and its data look like to a person: the per-run HTML report and the tables
and plots the notebooks show. Read from ML Metadata and the artifacts it points to.

Modules: `statistics` (TFDV statistics), `evaluation` (metrics, thresholds, baseline, subgroups),
`plots` (matplotlib, as inline PNGs), `run_report` (gather + a Jinja2 template, written by
`cd4ml run`). The names notebooks use are importable from here.
"""

from cd4ml.report.evaluation import baseline_on_same_data, model_evaluation, subgroup_errors, thresholds
from cd4ml.report.plots import plot_distributions, plot_error_by, plot_importances, plot_lineage, png_bytes
from cd4ml.report.run_report import REPORT_FILE, ReportData, gather, render, write_report, write_run_report
from cd4ml.report.statistics import feature_distribution, load_statistics, statistics_summary

__all__ = ["baseline_on_same_data", "model_evaluation", "subgroup_errors", "thresholds", "plot_distributions",
           "plot_error_by", "plot_importances", "plot_lineage", "png_bytes", "REPORT_FILE", "ReportData", "gather",
           "render", "write_report", "write_run_report", "feature_distribution", "load_statistics",
           "statistics_summary"]
