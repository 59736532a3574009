// The worker entry comes from the package; the app only gives it a file to bundle.
import "hearth/worker";
