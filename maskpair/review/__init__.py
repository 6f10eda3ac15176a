"""The review: a person judges every image/mask pair by keyboard; each verdict goes to a durable `ReviewLog`."""
from maskpair.review.log import VERDICTS, ReviewLog

__all__ = ["ReviewLog", "VERDICTS"]
