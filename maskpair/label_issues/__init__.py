"""Label issues: examples ranked by how likely their mask is wrong, from out-of-fold predictions (cleanlab), and
planted errors to measure that ranking. The folds can run as independent jobs (`run_fold`, then `merge_folds`)."""
from maskpair.label_issues.folds import (
    FOLDS_DIR,
    find_label_issues,
    label_issue_config,
    merge_folds,
    run_fold,
)
from maskpair.label_issues.planting import (
    PLANTED_ERRORS,
    plant_errors,
    planted_copy,
    planted_recall,
)
from maskpair.label_issues.rank import (
    KINDS,
    format_ranking,
    score_example,
)

__all__ = ["FOLDS_DIR", "KINDS", "PLANTED_ERRORS", "find_label_issues", "format_ranking", "label_issue_config", "merge_folds",
           "plant_errors", "planted_copy", "planted_recall", "run_fold", "score_example"]
