# The global timeout fires while the script runs Python code (no machine needed).
import time
time.sleep(600)
