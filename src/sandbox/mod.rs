//! placeholder until the sandbox branch merges
pub struct Sandbox;
pub struct SimHandle;
impl SimHandle {
    pub fn base_url(&self) -> String {
        String::new()
    }
}
impl Sandbox {
    pub fn vendors(&self) -> [(&'static str, &SimHandle); 0] {
        []
    }
}
pub fn sandbox_credentials() -> Vec<(&'static str, &'static str, &'static str)> {
    vec![]
}
