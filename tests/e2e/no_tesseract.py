# OCR without tesseract on PATH: one clear error.
from ntd.errors import MachineError

start_all()
machine.wait_until_succeeds("true")
try:
    machine.get_screen_text()
    raise Exception("OCR worked without tesseract")
except MachineError as e:
    assert "OCR needs tesseract, which is not on PATH" in str(e), str(e)
machine.screenshot("still-works")
