"""Images in and out: uploads (decode, check, resize), infotext (A1111 metadata both ways), the
invisible watermark, and outputs (atomic saves in A1111's folder layout). Pure Pillow/numpy: no torch."""
