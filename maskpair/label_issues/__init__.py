"""Label issues: examples ranked by how likely their mask is wrong, from out-of-fold predictions (cleanlab), and
planted errors to measure that ranking."""
from maskpair.label_issues.planting import (
           PLANTED_ERRORS,
           plant_errors,
           planted_copy,
           planted_recall,
)
from maskpair.label_issues.rank import (
           KINDS,
           find_label_issues,
           format_ranking,
           label_issue_config,
           score_example,
)

__all__ = ["KINDS", "PLANTED_ERRORS", "find_label_issues", "format_ranking", "label_issue_config", "plant_errors",
           "planted_copy", "planted_recall", "score_example"]
