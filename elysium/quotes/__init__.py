"""The shopper's quote page (``routes``), the staff's quote form (``elysium/staff/quotes.py``)
and what both show of a commission's quotes (``panel``)."""
