// Progress of long operations (reprocess, export, big lists): the region being worked on
// gets aria-busy="true", and the indicator under the header shows what is happening,
// with a bar when the fraction done is known. Several tasks may run at once; the
// indicator shows the newest and hides when the last one ends.

export class ProgressIndicator {
  constructor(container) {
    this.container = container;
    this.text = container.querySelector("[data-progress-text]");
    this.bar = container.querySelector("progress");
    this.tasks = [];
  }

  /** Start a task on `region` (may be null); returns {update(label, fraction), done()}. */
  start(region, label) {
    const task = { region, label, fraction: null };
    this.tasks.push(task);
    region?.setAttribute("aria-busy", "true");
    this.render();
    return {
      update: (newLabel, fraction = null) => {
        task.label = newLabel;
        task.fraction = fraction;
        this.render();
      },
      done: () => {
        this.tasks = this.tasks.filter((other) => other !== task);
        if (region && !this.tasks.some((other) => other.region === region)) {
          region.setAttribute("aria-busy", "false");
        }
        this.render();
      },
    };
  }

  /** Run `work(task)` as a task: done however it ends. */
  async run(region, label, work) {
    const task = this.start(region, label);
    try {
      return await work(task);
    } finally {
      task.done();
    }
  }

  render() {
    const task = this.tasks[this.tasks.length - 1];
    this.container.hidden = !task;
    if (!task) return;
    this.text.textContent = task.label;
    if (task.fraction === null) {
      this.bar.removeAttribute("value");
    } else {
      this.bar.value = Math.max(0, Math.min(1, task.fraction));
    }
  }
}
