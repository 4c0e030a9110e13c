"""The training bar's rate and ETA leave out paused stretches (compilation,
evaluation, checkpoint writes), on a fake clock."""
import io

from itr_jax import progress


class _Clock:
  def __init__(self):
    self.now = 1000.0

  def __call__(self):
    return self.now


def _bar(total, clock):
  bar = progress.ProgressBar(total=total, file=io.StringIO(), mininterval=0,
                             smoothing=0)  # smoothing 0: average rate since start
  bar._time = clock  # pylint: disable=protected-access
  bar.start_t = bar.last_print_t = clock()
  return bar


def test_paused_time_is_not_training_time():
  clock = _Clock()
  bar = _bar(100, clock)
  with bar.paused():
    clock.now += 90.0  # compiling the first step
  bar.update(1)
  for _ in range(9):
    clock.now += 0.5  # 2 steps/s
    bar.update(1)
  with bar.paused():
    clock.now += 30.0  # a dev evaluation
  for _ in range(10):
    clock.now += 0.5
    bar.update(1)
  info = bar.format_dict
  # 20 steps in 9.5 s of training (the compiled step took no training time).
  assert info["elapsed"] == 9.5
  assert abs(20 / info["elapsed"] - 2.105) < 1e-3
  remaining = (info["total"] - info["n"]) / (info["n"] / info["elapsed"])
  assert abs(remaining - 38.0) < 1e-9  # 80 steps at 20/9.5 steps/s
  bar.close()


def test_pause_keeps_unprinted_steps_time():
  # Steps between the last print and a pause keep their time: only the
  # paused stretch itself is dropped.
  clock = _Clock()
  bar = _bar(10, clock)
  bar.mininterval = 100.0  # nothing prints during the steps below
  for _ in range(4):
    clock.now += 1.0
    bar.update(1)
  with bar.paused():
    clock.now += 50.0
  assert bar._time() - bar.start_t == 4.0  # pylint: disable=protected-access
  bar.close()


def test_disabled_bar_pauses_without_error():
  bar = progress.ProgressBar(total=3, disable=True)
  with bar.paused():
    pass
  bar.update(1)
  bar.close()


def test_off_a_terminal_the_bar_writes_plain_lines():
  """A log file gets whole lines, no carriage returns or cursor codes, also
  around tqdm.write (the trainer's [dev] lines)."""
  import io  # pylint: disable=import-outside-toplevel
  out = io.StringIO()
  bar = progress.ProgressBar(total=3, file=out, mininterval=0)
  for _ in range(3):
    bar.update(1)
    progress.tqdm.tqdm.write("[dev] line", file=out)
  bar.close()
  text = out.getvalue()
  assert "\r" not in text and "\x1b" not in text, repr(text)
  assert "3/3" in text and text.count("[dev] line") == 3
  # One line per step count: the redraws after each [dev] line and at close
  # repeat nothing, and no blank lines.
  bars = [line for line in text.splitlines() if "[dev]" not in line]
  assert [line.split("|")[2].split()[0] for line in bars] == ["0/3", "1/3", "2/3", "3/3"], text
  assert text.endswith("\n") and "\n\n" not in text, repr(text)
