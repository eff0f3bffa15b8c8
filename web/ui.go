package web

import "net/http"

// The page and its assets: written separately (ui/).

func (s *Server) page(w http.ResponseWriter, r *http.Request) {
	http.Error(w, "the status page is not written yet", http.StatusNotImplemented)
}

func (s *Server) nodePage(w http.ResponseWriter, r *http.Request) {
	http.Error(w, "the status page is not written yet", http.StatusNotImplemented)
}

func (s *Server) static(w http.ResponseWriter, r *http.Request) { http.NotFound(w, r) }
