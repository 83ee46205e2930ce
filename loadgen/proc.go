package loadgen

func sampleAll(pids []int) []ProcSample {
	out := make([]ProcSample, len(pids))
	for i, p := range pids {
		out[i] = sample(p)
	}
	return out
}

// diffSamples returns the CPU spent between before and after, with after's
// memory.
func diffSamples(before, after []ProcSample) []ProcSample {
	out := make([]ProcSample, len(after))
	for i := range after {
		out[i] = after[i]
		if i < len(before) {
			out[i].CPU -= before[i].CPU
		}
	}
	return out
}
