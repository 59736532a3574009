// The engine's worker comes from the package; the page only gives Vite an entry to bundle.
import "hearth/worker";
