// The package's worker, plus one message the hardening page uses to make the worker die of an
// uncaught error, as a crashed worker would.
import "hearth/worker";

self.addEventListener("message", (event: MessageEvent<{ type?: string }>) => {
  if (event.data?.type === "die") {
    setTimeout(() => {
      throw new Error("the worker dies on purpose");
    });
  }
});
