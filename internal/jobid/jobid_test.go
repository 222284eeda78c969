package jobid

import "testing"

func TestFromObject(t *testing.T) {
	j1, a1 := FromObject("b", "k", `"etag1"`)
	j2, a2 := FromObject("b", "k", "etag1")
	if j1 != j2 || a1 != a2 {
		t.Fatalf("quoted and unquoted etag differ: %s %s", j1, j2)
	}
	if j3, _ := FromObject("b", "k", "etag2"); j3 == j1 {
		t.Fatal("different etag gave the same job id")
	}
	if j4, _ := FromObject("b", "k\x00etag1", ""); j4 == j1 {
		t.Fatal("separator ambiguity")
	}
	if !ValidJob(j1) || !ValidAsset(a1) || ValidJob(a1) || ValidAsset(j1) {
		t.Fatalf("validation wrong for %s %s", j1, a1)
	}
	if AssetOf(j1) != a1 || JobOf(a1) != j1 {
		t.Fatal("AssetOf/JobOf do not round-trip")
	}
}

func TestValid(t *testing.T) {
	for _, s := range []string{"", "job_", "job_ABCDEFGHIJKLMNOPQRSTUVWXYZ", "job_abcdefghijklmnopqrstuvwxy1", "job_abcdefghijklmnopqrstuvwxyz2", "job_../../etc/passwd"} {
		if ValidJob(s) {
			t.Errorf("ValidJob(%q) = true", s)
		}
	}
	if !ValidJob("job_abcdefghijklmnopqrstuvwxyz") {
		t.Error("valid id rejected")
	}
}
