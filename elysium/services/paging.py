"""Page arithmetic shared by every paginated listing (the shop's, the back office's)."""

from __future__ import annotations


class Paged:
    """For a listing that knows its ``total``, its ``page`` (from 1) and ``per_page``."""

    total: int
    page: int
    per_page: int

    @property
    def pages(self) -> int:
        return max((self.total + self.per_page - 1) // self.per_page, 1)

    @property
    def has_previous(self) -> bool:
        return self.page > 1

    @property
    def has_next(self) -> bool:
        return self.page < self.pages
